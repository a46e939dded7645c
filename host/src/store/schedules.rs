//! Schedules: cron triggers of a script.

use super::{ExecutionRecord, ScheduleRecord, StoreError};

/// One firing of a schedule, for [`ScheduleStore::fire_schedule`].
pub struct Firing<'a> {
    /// The due time it fires at: it fires only if still due then.
    pub due: u64,
    /// The `updated_at` of the schedule its run was made from: it fires
    /// only if nobody changed it since (else the run is made again).
    pub made_from: &'a str,
    /// Its next time after this one (`None`: never again).
    pub next: Option<u64>,
    /// The execution it makes, if it makes one (a skip makes none), stored
    /// with it and named its last.
    pub run: Option<&'a ExecutionRecord>,
    /// When it fired (RFC 3339).
    pub at: &'a str,
}

impl Firing<'_> {
    /// `schedule` as this firing leaves it, if it fires it (active, and
    /// due at [`Self::due`]).
    pub fn fires(&self, schedule: &ScheduleRecord) -> Option<ScheduleRecord> {
        if !schedule.active
            || schedule.next_run_ms != Some(self.due)
            || schedule.updated_at != self.made_from
        {
            return None;
        }
        let mut fired = schedule.clone();
        fired.next_run_ms = self.next;
        if let Some(run) = self.run {
            fired.last_run_at = Some(self.at.to_owned());
            fired.last_execution_id = Some(run.id.clone());
        }
        Some(fired)
    }
}

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
    /// Fires schedule `id` if it is active, still due at `firing.due` and
    /// as its run was made from:
    /// its next time moves on and its run (if any) is stored with it, in
    /// one transaction where the store has them (PostgreSQL), so of the
    /// nodes that find it due one fires it and a crash loses no run that
    /// was made. sled writes the schedule first: a crash in between loses
    /// that one run rather than running it twice. `None` (nothing written)
    /// if it was not due then: fired already, paused, changed or deleted.
    async fn fire_schedule(
        &self,
        id: &str,
        firing: Firing<'_>,
    ) -> Result<Option<ScheduleRecord>, StoreError>;
    /// Deletes a schedule if `expect` accepts it as it is at the moment of
    /// the delete (atomically); returns it if there was one.
    async fn delete_schedule(
        &self,
        id: &str,
        expect: &(dyn for<'r> Fn(&'r ScheduleRecord) -> Result<(), StoreError> + Send + Sync),
    ) -> Result<Option<ScheduleRecord>, StoreError>;
}
