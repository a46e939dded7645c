//! The sled side of [`ExecutionStore`]: `executions` by id. Ids are UUIDv7
//! strings, so key order is creation order.

use super::{SledStore, backend, decode, put};
use crate::store::executions::ExecutionStore;
use crate::store::{ExecutionRecord, ExecutionStatus, StoreError};

impl ExecutionStore for SledStore {
    fn put_execution(&self, execution: &ExecutionRecord) -> Result<(), StoreError> {
        put(&self.executions, execution.id.as_bytes(), execution)
    }

    fn execution(&self, id: &str) -> Result<Option<ExecutionRecord>, StoreError> {
        Self::get_decoded(&self.executions, id)
    }

    fn executions_in(
        &self,
        states: &[ExecutionStatus],
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        let mut found = Vec::new();
        // Keys are UUID v7 strings, so iteration is oldest first.
        for entry in self.executions.iter() {
            let (_, bytes) = entry.map_err(backend)?;
            let record: ExecutionRecord = decode(&bytes)?;
            if states.contains(&record.status) {
                found.push(record);
            }
        }
        Ok(found)
    }

    fn executions_page(
        &self,
        keep: &dyn Fn(&ExecutionRecord) -> bool,
        skip: usize,
        take: usize,
    ) -> Result<(Vec<ExecutionRecord>, usize), StoreError> {
        let (mut page, mut total) = (Vec::new(), 0);
        // Keys are UUID v7 strings: reverse key order is newest first.
        for entry in self.executions.iter().rev() {
            let record: ExecutionRecord = decode(&entry.map_err(backend)?.1)?;
            if keep(&record) {
                if total >= skip && page.len() < take {
                    page.push(record);
                }
                total += 1;
            }
        }
        Ok((page, total))
    }

    fn visit_executions_since(
        &self,
        since_ms: u64,
        visit: &mut dyn FnMut(ExecutionRecord),
    ) -> Result<(), StoreError> {
        // Keys are UUID v7 strings, which begin with their creation time in
        // ms: the smallest id of that millisecond is where the range starts.
        let first = uuid::Builder::from_unix_timestamp_millis(since_ms, &[0; 10])
            .into_uuid()
            .to_string();
        for entry in self.executions.range(first.into_bytes()..) {
            visit(decode(&entry.map_err(backend)?.1)?);
        }
        Ok(())
    }

    fn execution_counts(&self) -> Result<Vec<(ExecutionStatus, u64)>, StoreError> {
        let mut counts: Vec<(ExecutionStatus, u64)> = Vec::new();
        for entry in self.executions.iter() {
            let record: ExecutionRecord = decode(&entry.map_err(backend)?.1)?;
            match counts
                .iter_mut()
                .find(|(status, _)| *status == record.status)
            {
                Some((_, n)) => *n += 1,
                None => counts.push((record.status, 1)),
            }
        }
        Ok(counts)
    }
}
