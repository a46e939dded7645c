//! The PostgreSQL side of [`ScheduleStore`]: `schedules` by id (a UUIDv7,
//! so id order is creation order).

use sqlx::Row as _;

use super::{PgStore, all, backend, decode, insert_record, one, update_record};
use crate::store::schedules::ScheduleStore;
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

    async fn delete_schedule(
        &self,
        id: &str,
        expect: &(dyn for<'r> Fn(&'r ScheduleRecord) -> Result<(), StoreError> + Send + Sync),
    ) -> Result<Option<ScheduleRecord>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let Some(row) = sqlx::query("SELECT record FROM schedules WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let current: ScheduleRecord = decode(row.get("record"))?;
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
