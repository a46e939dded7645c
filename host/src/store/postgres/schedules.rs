//! The PostgreSQL side of [`ScheduleStore`]: `schedules` by id (a UUIDv7,
//! so id order is creation order).

use super::{PgStore, all, backend, encode, insert_record, locked, one, update_record};
use crate::store::schedules::{Firing, ScheduleStore};
use crate::store::{ScheduleRecord, StoreError};

#[async_trait::async_trait]
impl ScheduleStore for PgStore {
    async fn create_schedule(&self, schedule: &ScheduleRecord) -> Result<(), StoreError> {
        insert_record(&self.pool, "schedules", &schedule.id, schedule).await
    }

    async fn schedule(&self, id: &str) -> Result<Option<ScheduleRecord>, StoreError> {
        one(&self.pool, "SELECT record FROM schedules WHERE id = $1", id).await
    }

    async fn schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        all(&self.pool, "SELECT record FROM schedules ORDER BY id").await
    }

    async fn update_schedule(
        &self,
        id: &str,
        change: &(
             dyn for<'r> Fn(&'r ScheduleRecord) -> Result<ScheduleRecord, StoreError> + Send + Sync
         ),
    ) -> Result<Option<ScheduleRecord>, StoreError> {
        update_record(&self.pool, "schedules", id, change).await
    }

    /// The schedule's row locked, advanced, and its run inserted, in one
    /// transaction: of the nodes that find it due, the first to lock it
    /// fires it, and the others find it moved on.
    async fn fire_schedule(
        &self,
        id: &str,
        firing: Firing<'_>,
    ) -> Result<Option<ScheduleRecord>, StoreError> {
        let _counted = self.execution_counts.writes.read().await;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let Some(current) = locked(&mut tx, "schedules", id).await? else {
            return Ok(None);
        };
        let Some(fired) = firing.fires(&current) else {
            return Ok(None);
        };
        sqlx::query("UPDATE schedules SET record = $2 WHERE id = $1")
            .bind(id)
            .bind(encode(&fired)?)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        let before = match firing.run {
            Some(run) => Some(super::executions::write(&mut *tx, run).await?),
            None => None,
        };
        tx.commit().await.map_err(backend)?;
        if let (Some(run), Some(before)) = (firing.run, before) {
            self.written(before, run);
        }
        Ok(Some(fired))
    }

    async fn delete_schedule(
        &self,
        id: &str,
        expect: &(dyn for<'r> Fn(&'r ScheduleRecord) -> Result<(), StoreError> + Send + Sync),
    ) -> Result<Option<ScheduleRecord>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let Some(current) = locked::<ScheduleRecord>(&mut tx, "schedules", id).await? else {
            return Ok(None);
        };
        expect(&current)?;
        sqlx::query("DELETE FROM schedules WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(Some(current))
    }
}
