//! Records for tests of the store and of what sits on it.

use super::{
    ExecutionRecord, ExecutionStatus, Language, ScriptKind, ScriptRecord, ScriptStatus, Trigger,
};

/// An execution record of `script` (`None`: ad hoc) in `status`, created
/// when its UUIDv7 id was made and, if final, finished then too.
pub fn execution(id: &str, script: Option<&str>, status: ExecutionStatus) -> ExecutionRecord {
    let made = uuid::Uuid::try_parse(id)
        .ok()
        .and_then(|id| id.get_timestamp())
        .map_or(0, |t| {
            t.to_unix().0 * 1000 + u64::from(t.to_unix().1) / 1_000_000
        });
    let created_at = crate::time_of_ms(made);
    ExecutionRecord {
        node: None,
        cancel_requested: false,
        script_id: script.map(Into::into),
        script_version: script.map(|_| 1),
        status,
        timeout_ms: 1000,
        memory_mb: 16,
        completed_at: status.is_final().then(|| created_at.clone()),
        ..ExecutionRecord::queued(id.into(), Language::Javascript, Trigger::Api, created_at)
    }
}

/// A UUIDv7 string made at `ms`, `n` telling apart those of one ms.
pub fn id_at(ms: u64, n: u8) -> String {
    let mut random = [0; 10];
    random[9] = n;
    uuid::Builder::from_unix_timestamp_millis(ms, &random)
        .into_uuid()
        .to_string()
}

/// A JavaScript script record at `version`.
pub fn script(id: &str, name: &str, version: u32) -> ScriptRecord {
    ScriptRecord {
        id: id.into(),
        org: None,
        name: name.into(),
        language: Language::Javascript,
        kind: ScriptKind::Command,
        public: false,
        description: None,
        tags: Vec::new(),
        metadata: serde_json::Map::new(),
        status: ScriptStatus::Active,
        limits: None,
        allowed_hosts: Vec::new(),
        created_by: None,
        owner: None,
        editors: Vec::new(),
        version_by: None,
        version,
        content_hash: blake3::hash(b"v2").to_hex().to_string(),
        size_bytes: 2,
        created_at: "2026-01-01T00:00:00.000Z".into(),
        updated_at: "2026-01-02T00:00:00.000Z".into(),
        execution_count: 0,
        last_executed_at: None,
    }
}

/// A [`super::FileSyncer`] that syncs for real and notes, for each marker
/// it watches, whether a completed sync has covered it yet: the store's log
/// synced while holding it (as it is, or in a packed value), or a blob file holding it synced and then its
/// directory. A test asks right after an answer, so a sync that is missing,
/// or that runs only after the answer, leaves the marker uncovered.
#[derive(Default)]
pub struct CoverageSyncer {
    watched: std::sync::Mutex<Vec<Watched>>,
    /// Added to each sync of the log: a slow disk, so that an answer that
    /// does not wait for its sync arrives well before it ends.
    delay: std::time::Duration,
    /// Every sync fails from now on: a disk that broke.
    failing: std::sync::atomic::AtomicBool,
}

struct Watched {
    marker: Vec<u8>,
    /// In a blob file that was synced; durable once its directory is.
    blob_synced: bool,
    covered: bool,
}

impl CoverageSyncer {
    pub fn slow(delay: std::time::Duration) -> Self {
        Self {
            delay,
            ..Self::default()
        }
    }

    /// Fails every sync from now on.
    pub fn fail(&self) {
        self.failing
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn broken(&self) -> std::io::Result<()> {
        if self.failing.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(std::io::Error::other("the disk failed (injected)"));
        }
        Ok(())
    }

    pub fn watch(&self, marker: &str) {
        self.lock().push(Watched {
            marker: marker.as_bytes().to_vec(),
            blob_synced: false,
            covered: false,
        });
    }

    pub fn covered(&self, marker: &str) -> bool {
        self.lock()
            .iter()
            .any(|w| w.covered && w.marker == marker.as_bytes())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Watched>> {
        self.watched
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The watched markers not yet covered that `path` holds now: what a
    /// sync starting now makes durable.
    fn held_by(&self, path: &std::path::Path) -> std::io::Result<Vec<Vec<u8>>> {
        let pending: Vec<Vec<u8>> = self
            .lock()
            .iter()
            .filter(|w| !w.covered)
            .map(|w| w.marker.clone())
            .collect();
        if pending.is_empty() {
            return Ok(pending);
        }
        let bytes = std::fs::read(path)?;
        // A packed record holds its marker compressed: look in it unpacked.
        let unpacked = super::sled::unpacked_in(&bytes);
        let holds = |text: &[u8], m: &[u8]| text.windows(m.len()).any(|w| w == m);
        Ok(pending
            .into_iter()
            .filter(|m| holds(&bytes, m) || unpacked.iter().any(|text| holds(text, m)))
            .collect())
    }
}

impl super::FileSyncer for CoverageSyncer {
    fn sync_data(&self, file: &std::fs::File, path: &std::path::Path) -> std::io::Result<()> {
        self.broken()?;
        let held = self.held_by(path)?;
        std::thread::sleep(self.delay);
        file.sync_data()?;
        for w in self.lock().iter_mut() {
            w.covered |= held.contains(&w.marker);
        }
        Ok(())
    }

    fn sync_all(&self, file: &std::fs::File, path: &std::path::Path) -> std::io::Result<()> {
        self.broken()?;
        if path.is_dir() {
            file.sync_all()?;
            if path.ends_with("blobs") {
                for w in self.lock().iter_mut() {
                    w.covered |= w.blob_synced;
                }
            }
            return Ok(());
        }
        let held = self.held_by(path)?;
        file.sync_all()?;
        for w in self.lock().iter_mut() {
            w.blob_synced |= held.contains(&w.marker);
        }
        Ok(())
    }
}

/// A daily schedule of script `s1`, due at 1 000 ms.
pub fn schedule(id: &str) -> super::ScheduleRecord {
    super::ScheduleRecord {
        id: id.into(),
        org: None,
        name: "nightly".into(),
        script_id: "s1".into(),
        cron: "@daily".into(),
        timezone: "UTC".into(),
        parameters: serde_json::json!({}),
        active: true,
        overlap: super::Overlap::default(),
        created_at: "2026-01-01T00:00:00.000Z".into(),
        updated_at: "2026-01-01T00:00:00.000Z".into(),
        created_by: None,
        next_run_ms: Some(1_000),
        last_run_at: None,
        last_execution_id: None,
    }
}
