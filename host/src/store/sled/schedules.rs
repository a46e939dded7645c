//! The sled side of [`ScheduleStore`]: `schedules` by id (a UUIDv7, so
//! creation order).

use super::{Change, SledStore, put, swap, update};
use crate::store::executions::ExecutionStore as _;
use crate::store::schedules::{Firing, ScheduleStore};
use crate::store::{ScheduleRecord, StoreError};

#[async_trait::async_trait]
impl ScheduleStore for SledStore {
    async fn create_schedule(&self, schedule: &ScheduleRecord) -> Result<(), StoreError> {
        put(&self.schedules, &schedule.id, schedule)
    }

    async fn schedule(&self, id: &str) -> Result<Option<ScheduleRecord>, StoreError> {
        Self::get_decoded(&self.schedules, id)
    }

    async fn schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        Self::all_decoded(&self.schedules)
    }

    async fn update_schedule(
        &self,
        id: &str,
        change: &(
             dyn for<'r> Fn(&'r ScheduleRecord) -> Result<ScheduleRecord, StoreError> + Send + Sync
         ),
    ) -> Result<Option<ScheduleRecord>, StoreError> {
        let updated = update(&self.schedules, id.as_bytes(), change)?;
        Ok(updated.map(|(_, after)| after))
    }

    async fn fire_schedule(
        &self,
        id: &str,
        firing: Firing<'_>,
    ) -> Result<Option<ScheduleRecord>, StoreError> {
        let swapped = swap(&self.schedules, id.as_bytes(), |current| {
            Ok(firing.fires(current).map_or(Change::Keep, Change::Put))
        })?;
        let Some((_, Change::Put(fired))) = swapped else {
            return Ok(None);
        };
        if let Some(run) = firing.run {
            self.put_execution(run).await?;
        }
        Ok(Some(fired))
    }

    async fn delete_schedule(
        &self,
        id: &str,
        expect: &(dyn for<'r> Fn(&'r ScheduleRecord) -> Result<(), StoreError> + Send + Sync),
    ) -> Result<Option<ScheduleRecord>, StoreError> {
        let swapped = swap(&self.schedules, id.as_bytes(), |current| {
            expect(current).map(|()| Change::Remove)
        })?;
        Ok(swapped.map(|(before, _)| before))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::TEST_CACHE_BYTES;
    use super::super::{backend, encode};
    use super::*;
    use crate::store::testing::schedule;

    #[tokio::test]
    async fn a_swap_that_lost_a_race_applies_its_change_to_the_winner_s_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), TEST_CACHE_BYTES).unwrap();
        store.create_schedule(&schedule("a")).await.unwrap();
        let raced = std::sync::atomic::AtomicBool::new(false);
        let written = store
            .update_schedule("a", &|current| {
                if !raced.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    // Another writer lands between this read and its write.
                    let mut theirs = current.clone();
                    theirs.name = "theirs".into();
                    store
                        .schedules
                        .insert("a", encode(&theirs)?)
                        .map_err(backend)?;
                }
                let mut mine = current.clone();
                mine.active = false;
                Ok(mine)
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!((written.name.as_str(), written.active), ("theirs", false));
    }
}
