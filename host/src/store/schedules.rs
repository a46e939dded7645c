//! Schedules: cron triggers of a script.

use super::{ScheduleRecord, StoreError};

#[async_trait::async_trait]
pub trait ScheduleStore {
    /// Stores a new schedule.
    async fn create_schedule(&self, schedule: &ScheduleRecord) -> Result<(), StoreError>;
    async fn schedule(&self, id: &str) -> Result<Option<ScheduleRecord>, StoreError>;
    /// Every schedule, in id (creation) order.
    async fn schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError>;
    /// Replaces a schedule with what `change` makes of the current record,
    /// atomically (`change` may run more than once); `None` if there is no
    /// such schedule.
    async fn update_schedule(
        &self,
        id: &str,
        change: &(
             dyn for<'r> Fn(&'r ScheduleRecord) -> Result<ScheduleRecord, StoreError> + Send + Sync
         ),
    ) -> Result<Option<ScheduleRecord>, StoreError>;
    /// Deletes a schedule if `expect` accepts it as it is at the moment of
    /// the delete (atomically); returns it if there was one.
    async fn delete_schedule(
        &self,
        id: &str,
        expect: &(dyn for<'r> Fn(&'r ScheduleRecord) -> Result<(), StoreError> + Send + Sync),
    ) -> Result<Option<ScheduleRecord>, StoreError>;
}
