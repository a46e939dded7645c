//! Schedules: cron triggers of a script.

use super::{ScheduleRecord, StoreError};

pub trait ScheduleStore {
    /// Stores a new schedule.
    fn create_schedule(&self, schedule: &ScheduleRecord) -> Result<(), StoreError>;
    fn schedule(&self, id: &str) -> Result<Option<ScheduleRecord>, StoreError>;
    /// Every schedule, in id (creation) order.
    fn schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError>;
    /// Replaces a schedule with what `change` makes of the current record,
    /// atomically (`change` may run more than once); `None` if there is no
    /// such schedule.
    fn update_schedule(
        &self,
        id: &str,
        change: &dyn Fn(&ScheduleRecord) -> Result<ScheduleRecord, StoreError>,
    ) -> Result<Option<ScheduleRecord>, StoreError>;
    /// Deletes a schedule if `expect` accepts it as it is at the moment of
    /// the delete (atomically); returns it if there was one.
    fn delete_schedule(
        &self,
        id: &str,
        expect: &dyn Fn(&ScheduleRecord) -> Result<(), StoreError>,
    ) -> Result<Option<ScheduleRecord>, StoreError>;
}
