//! The sled implementation of [`Store`]: one tree per record family, JSON
//! values, and group commit through `flush_async`.

use std::path::Path;

use super::{
    ExecutionRecord, ExecutionStatus, FlushFuture, SCHEMA_VERSION, ScriptRecord, Store, StoreError,
};

pub struct SledStore {
    db: sled::Db,
    scripts: sled::Tree,
    script_names: sled::Tree,
    script_versions: sled::Tree,
    executions: sled::Tree,
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn version_key(id: &str, version: u32) -> Vec<u8> {
    format!("{id}/{version:010}").into_bytes()
}

impl SledStore {
    /// Opens (or creates) the database in `dir` and checks its schema version.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] if sled cannot open it (for example another
    /// process holds it), [`StoreError::Schema`] if it is of another version.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).open().map_err(backend)?;
        let meta = db.open_tree("meta").map_err(backend)?;
        match meta.get("schema_version").map_err(backend)? {
            Some(found) => {
                let found: u32 = decode(&found)?;
                if found != SCHEMA_VERSION {
                    return Err(StoreError::Schema { found });
                }
            }
            None => {
                meta.insert("schema_version", encode(&SCHEMA_VERSION)?)
                    .map_err(backend)?;
            }
        }
        Ok(Self {
            scripts: db.open_tree("scripts").map_err(backend)?,
            script_names: db.open_tree("script_names").map_err(backend)?,
            script_versions: db.open_tree("script_versions").map_err(backend)?,
            executions: db.open_tree("executions").map_err(backend)?,
            db,
        })
    }
}

impl Store for SledStore {
    fn create_script(&self, script: &ScriptRecord, content: &[u8]) -> Result<(), StoreError> {
        // Claim the name first: compare-and-swap makes two concurrent creates
        // of one name end with exactly one winner.
        let claimed = self
            .script_names
            .compare_and_swap(
                script.name.as_bytes(),
                None as Option<&[u8]>,
                Some(script.id.as_bytes()),
            )
            .map_err(backend)?;
        if claimed.is_err() {
            return Err(StoreError::NameTaken(script.name.clone()));
        }
        self.script_versions
            .insert(version_key(&script.id, script.version), content)
            .map_err(backend)?;
        self.scripts
            .insert(script.id.as_bytes(), encode(script)?)
            .map_err(backend)?;
        Ok(())
    }

    fn script(&self, id_or_name: &str) -> Result<Option<ScriptRecord>, StoreError> {
        if let Some(bytes) = self.scripts.get(id_or_name).map_err(backend)? {
            return decode(&bytes).map(Some);
        }
        let Some(id) = self.script_names.get(id_or_name).map_err(backend)? else {
            return Ok(None);
        };
        match self.scripts.get(id).map_err(backend)? {
            Some(bytes) => decode(&bytes).map(Some),
            None => Ok(None),
        }
    }

    fn script_content(&self, id: &str, version: u32) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .script_versions
            .get(version_key(id, version))
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn note_execution(&self, script_id: &str, at: &str) -> Result<(), StoreError> {
        let mut failure = None;
        self.scripts
            .update_and_fetch(script_id, |old| {
                let old = old?;
                match decode::<ScriptRecord>(old) {
                    Ok(mut script) => {
                        script.execution_count += 1;
                        script.last_executed_at = Some(at.to_string());
                        encode(&script)
                            .map_err(|e| failure = Some(e))
                            .ok()
                            .or_else(|| Some(old.to_vec()))
                    }
                    Err(e) => {
                        failure = Some(e);
                        Some(old.to_vec())
                    }
                }
            })
            .map_err(backend)?;
        failure.map_or(Ok(()), Err)
    }

    fn put_execution(&self, execution: &ExecutionRecord) -> Result<(), StoreError> {
        self.executions
            .insert(execution.id.as_bytes(), encode(execution)?)
            .map_err(backend)?;
        Ok(())
    }

    fn execution(&self, id: &str) -> Result<Option<ExecutionRecord>, StoreError> {
        self.executions
            .get(id)
            .map_err(backend)?
            .map(|bytes| decode(&bytes))
            .transpose()
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

    fn scripts(&self) -> Result<Vec<ScriptRecord>, StoreError> {
        self.scripts
            .iter()
            .map(|entry| decode(&entry.map_err(backend)?.1))
            .collect()
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

    fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(backend)
    }

    fn flush(&self) -> FlushFuture<'_> {
        Box::pin(async move {
            self.db.flush_async().await.map_err(backend)?;
            Ok(())
        })
    }
}
