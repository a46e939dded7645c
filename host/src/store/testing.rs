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
        version,
        content_hash: blake3::hash(b"v2").to_hex().to_string(),
        size_bytes: 2,
        created_at: "2026-01-01T00:00:00.000Z".into(),
        updated_at: "2026-01-02T00:00:00.000Z".into(),
        execution_count: 0,
        last_executed_at: None,
    }
}
