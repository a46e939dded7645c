//! What is stored. These are not the API's JSON shapes (see `api/`), though
//! they are close; they are encoded as JSON in the store.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Javascript,
    Python,
    Wasm,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Javascript => "javascript",
            Language::Python => "python",
            Language::Wasm => "wasm",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ScriptStatus {
    Draft,
    #[default]
    Active,
    Archived,
}

/// A script's own default limits; an execution request may override them,
/// and the server's maxima cap both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptLimits {
    /// At most the server's `limits.max_timeout_ms` (a script's upload
    /// past a maximum is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub timeout_ms: Option<u64>,
    /// At most the server's `limits.max_memory_mb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub memory_mb: Option<u64>,
    /// At most the server's `limits.max_fuel`, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub fuel: Option<u64>,
}

/// How a script is called, found from what its content exports at upload.
/// These are the names the store keeps; the API names a kind after what
/// was uploaded ([`ScriptKind::api_name`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScriptKind {
    /// Run through the execution API: source scripts and wasi:cli commands.
    #[default]
    Command,
    /// A wasi:http/proxy component, served at `/fn/{name}/…`.
    Http,
    /// A kiln:script component (the guest SDK's): run through the execution
    /// API with JSON in and out, with key-value and config from the host.
    Script,
}

impl ScriptKind {
    /// What the API calls a script of this kind in `language`: `source`
    /// (JavaScript or Python), `command` (a wasi:cli component), `sdk` (a
    /// kiln:script component, the guest SDK's) or `http` (a wasi:http
    /// component).
    pub fn api_name(self, language: Language) -> &'static str {
        match (self, language) {
            (ScriptKind::Command, Language::Javascript | Language::Python) => "source",
            (ScriptKind::Command, Language::Wasm) => "command",
            (ScriptKind::Http, _) => "http",
            (ScriptKind::Script, _) => "sdk",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptRecord {
    pub id: String,
    /// Its organization; absent for the default one (`store/orgs.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    pub name: String,
    pub language: Language,
    /// Records from before HTTP functions are all commands.
    #[serde(default)]
    pub kind: ScriptKind,
    /// An HTTP function anyone may call, without a credential.
    #[serde(default)]
    pub public: bool,
    pub description: Option<String>,
    pub tags: Vec<String>,
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub status: ScriptStatus,
    #[serde(default)]
    pub limits: Option<ScriptLimits>,
    /// The hosts its runs may send HTTP requests to (`egress/allowlist.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    #[serde(default)]
    pub created_by: Option<String>,
    /// Who may change it besides its editors and admins; `None` on records
    /// from before owners, whose owner is their creator ([`Self::owner`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Users (ids) who may change it as its owner does, except for who owns
    /// and who edits it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub editors: Vec<String>,
    /// Who wrote the current version (records from before: its creator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_by: Option<String>,
    /// The current version; versions 1..=version are kept unless deleted.
    pub version: u32,
    pub content_hash: String,
    pub size_bytes: u64,
    pub created_at: String,
    pub updated_at: String,
    pub execution_count: u64,
    pub last_executed_at: Option<String>,
}

/// One version of a script's content (the content itself is stored apart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: u32,
    pub content_hash: String,
    pub size_bytes: u64,
    pub created_at: String,
    #[serde(default)]
    pub created_by: Option<String>,
}

impl VersionRecord {
    /// The version a script record currently points at.
    pub fn current(script: &ScriptRecord) -> Self {
        Self {
            version: script.version,
            content_hash: script.content_hash.clone(),
            size_bytes: script.size_bytes,
            created_at: script.updated_at.clone(),
            created_by: script
                .version_by
                .clone()
                .or_else(|| script.created_by.clone()),
        }
    }
}

impl ScriptRecord {
    /// Its owner: the one named, else (records from before owners) its
    /// creator.
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref().or(self.created_by.as_deref())
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Timeout,
    Cancelled,
}

impl ExecutionStatus {
    pub const ALL: [ExecutionStatus; 6] = [
        ExecutionStatus::Queued,
        ExecutionStatus::Running,
        ExecutionStatus::Completed,
        ExecutionStatus::Failed,
        ExecutionStatus::Timeout,
        ExecutionStatus::Cancelled,
    ];

    /// Whether the execution has ended: nothing will change it again.
    pub fn is_final(self) -> bool {
        !matches!(self, ExecutionStatus::Queued | ExecutionStatus::Running)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Queued => "queued",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Completed => "completed",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Timeout => "timeout",
            ExecutionStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Api,
    Schedule,
    /// A request to an HTTP function at `/fn/{name}/…`.
    Http,
    /// `kiln run`: one run on the command line, no server; never stored.
    Cli,
}

/// What a schedule does when its time comes while its previous run is still
/// queued or running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Skip this run.
    #[default]
    Skip,
    /// Start another one.
    Allow,
}

/// A cron schedule that runs a stored script.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    pub id: String,
    /// Its organization; absent for the default one (`store/orgs.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    pub name: String,
    pub script_id: String,
    /// As given: 5 or 6 fields, or a macro such as `@daily`.
    pub cron: String,
    /// IANA zone the cron is read in.
    pub timezone: String,
    pub parameters: serde_json::Value,
    pub active: bool,
    pub overlap: Overlap,
    pub created_at: String,
    pub updated_at: String,
    pub created_by: Option<String>,
    /// Unix ms of the next run; none while paused or when the cron has no
    /// future time.
    pub next_run_ms: Option<u64>,
    pub last_run_at: Option<String>,
    pub last_execution_id: Option<String>,
}

/// The order of the caller's own queued executions: their `high` ones start
/// before their `normal` ones, and `normal` before `low`. Users take turns
/// at the workers whatever priorities they ask for.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

/// Why an execution did not complete, as the API's `error.code` writes
/// it: the sandbox's reason, or the host's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExecutionCode {
    Run(kiln_runtime::ErrorCode),
    Host(HostCode),
}

/// Why the host ended an execution that the sandbox did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HostCode {
    /// The queue was full when it was submitted.
    QueueFull,
    /// The server was draining when it was submitted.
    Unavailable,
    /// The server stopped while it ran.
    Interrupted,
    /// Kiln failed to run it.
    InternalError,
    /// Its organization had spent a quota (a scheduled run, skipped).
    QuotaExceeded,
}

impl ExecutionCode {
    pub const CANCELLED: Self = Self::Run(kiln_runtime::ErrorCode::Cancelled);
    pub const QUEUE_FULL: Self = Self::Host(HostCode::QueueFull);
    pub const UNAVAILABLE: Self = Self::Host(HostCode::Unavailable);
    pub const INTERRUPTED: Self = Self::Host(HostCode::Interrupted);
    pub const INTERNAL_ERROR: Self = Self::Host(HostCode::InternalError);
    pub const QUOTA_EXCEEDED: Self = Self::Host(HostCode::QuotaExceeded);

    /// The code as the API writes it, e.g. `QUEUE_FULL`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Run(code) => code.as_str(),
            Self::Host(HostCode::QueueFull) => "QUEUE_FULL",
            Self::Host(HostCode::Unavailable) => "UNAVAILABLE",
            Self::Host(HostCode::Interrupted) => "INTERRUPTED",
            Self::Host(HostCode::InternalError) => "INTERNAL_ERROR",
            Self::Host(HostCode::QuotaExceeded) => "QUOTA_EXCEEDED",
        }
    }
}

impl From<kiln_runtime::ErrorCode> for ExecutionCode {
    fn from(code: kiln_runtime::ErrorCode) -> Self {
        Self::Run(code)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExecutionError {
    #[schema(value_type = String, example = "MEMORY_LIMIT")]
    pub code: ExecutionCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

impl ExecutionError {
    /// A failure the host decided, with no script position.
    pub fn new(code: ExecutionCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            stack: None,
            line: None,
            column: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    pub id: String,
    /// The node that claimed it, in a store several nodes share (its lease
    /// is that node's); absent on a node with a store of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// A cancel asked for on a node other than the one running it, which
    /// that node reads (`jobs/leases.rs`); never shown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancel_requested: bool,
    /// Its organization; absent for the default one (`store/orgs.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script_version: Option<u32>,
    pub language: Language,
    pub status: ExecutionStatus,
    pub trigger: Trigger,
    #[serde(default)]
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// The schedule that started it, for `trigger: schedule`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_id: Option<String>,
    pub parameters: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
    /// Its stdin goes on after `input` with what a socket on
    /// `/v1/executions/{id}/ws` sends, until that closes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interactive: bool,
    /// The code of an ad-hoc execution (`POST /v1/execute`); never shown.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "code_text")]
    pub code: Option<Vec<u8>>,
    /// The hosts an ad-hoc execution may send HTTP requests to (a script's
    /// runs use the script's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    pub timeout_ms: u64,
    pub memory_mb: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// The limits asked for above the server's maxima, cut to them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clamped: Vec<ClampedLimit>,
    /// How long the run waited for its code to be compiled (or read from
    /// the compile cache) before it started: a first run after a start, or
    /// of a new version. Not part of `duration_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_wait_ms: Option<u64>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stdout: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stdout_truncated: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stderr_truncated: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ExecutionError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel_consumed: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_memory_bytes: Option<u64>,
    /// The outbound HTTP requests the run made, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_requests: Vec<OutboundRequest>,
}

/// A limit of a run, by its field's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitName {
    TimeoutMs,
    MemoryMb,
    Fuel,
}

/// A limit asked for (by the request, or the script's own) above the
/// server's maximum: the run got the maximum instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClampedLimit {
    pub limit: LimitName,
    pub requested: u64,
    /// The server's maximum, which the run got.
    pub maximum: u64,
}

/// One outbound HTTP request of a run: where it went and how it ended.
/// The query string is left out (it often carries credentials).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutboundRequest {
    pub method: String,
    /// The host, with the port when the URL named one; after redirects, the
    /// last one.
    pub host: String,
    pub path: String,
    /// The answer's status; none when there was no answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Bytes of the answer's body.
    #[serde(default)]
    pub bytes: u64,
    pub ms: u64,
    /// Why there was no answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ExecutionRecord {
    /// A queued record of no script, in the default organization, with no
    /// parameters, limits or outcome yet: the fields its maker sets come
    /// first, this last.
    pub fn queued(id: String, language: Language, trigger: Trigger, created_at: String) -> Self {
        Self {
            id,
            node: None,
            cancel_requested: false,
            org: None,
            script_id: None,
            script_version: None,
            language,
            status: ExecutionStatus::Queued,
            trigger,
            priority: Priority::default(),
            created_by: None,
            schedule_id: None,
            parameters: serde_json::json!({}),
            input: None,
            interactive: false,
            env: Vec::new(),
            code: None,
            allowed_hosts: Vec::new(),
            timeout_ms: 0,
            memory_mb: 0,
            fuel: None,
            clamped: Vec::new(),
            compile_wait_ms: None,
            created_at,
            started_at: None,
            completed_at: None,
            duration_ms: None,
            exit_code: None,
            result: None,
            stdout: String::new(),
            stderr: String::new(),
            stdout_truncated: false,
            stderr_truncated: false,
            error: None,
            fuel_consumed: None,
            peak_memory_bytes: None,
            http_requests: Vec::new(),
        }
    }
}

#[cfg(test)]
mod code_tests {
    use super::*;

    #[test]
    fn codes_are_stored_and_read_back_as_the_api_writes_them() {
        let codes = [
            ExecutionCode::Run(kiln_runtime::ErrorCode::MemoryLimit),
            ExecutionCode::CANCELLED,
            ExecutionCode::QUEUE_FULL,
            ExecutionCode::UNAVAILABLE,
            ExecutionCode::INTERRUPTED,
            ExecutionCode::INTERNAL_ERROR,
        ];
        for code in codes {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ExecutionCode>(&json).unwrap(), code);
        }
        assert!(serde_json::from_str::<ExecutionCode>("\"NOT_A_CODE\"").is_err());
    }
}

/// Ad-hoc code in a record: base64 text (a third above its size), where
/// records before schema 4 hold a JSON array of numbers (≈ 3.6 times it),
/// still read.
mod code_text {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option, reason = "the signature serde's `with` calls")]
    pub fn serialize<S: Serializer>(code: &Option<Vec<u8>>, to: S) -> Result<S::Ok, S::Error> {
        match code {
            Some(code) => to.serialize_str(&STANDARD.encode(code)),
            None => to.serialize_none(),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Text(String),
        Numbers(Vec<u8>),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<Option<Vec<u8>>, D::Error> {
        match Option::<Stored>::deserialize(from)? {
            None => Ok(None),
            Some(Stored::Numbers(code)) => Ok(Some(code)),
            Some(Stored::Text(text)) => STANDARD
                .decode(text)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_leave_out_empty_fields_and_read_the_older_layout() {
        let mut record = crate::store::testing::execution(
            "0190b5c4-0000-7000-8000-000000000001",
            None,
            ExecutionStatus::Queued,
        );
        record.code = Some(b"return 1".to_vec());
        let text = String::from_utf8(serde_json::to_vec(&record).unwrap()).unwrap();
        for absent in ["stdout", "error", "script_id", "env", "null"] {
            assert!(!text.contains(absent), "{absent} in {text}");
        }
        assert!(text.contains(r#""code":"cmV0dXJuIDE=""#), "{text}");
        assert_eq!(
            serde_json::from_str::<ExecutionRecord>(&text).unwrap(),
            record
        );
        // As schema 3 wrote it: every field, code as numbers.
        let mut old = serde_json::to_value(&record).unwrap();
        let fields = old.as_object_mut().unwrap();
        fields.insert("code".into(), serde_json::json!(b"return 1"));
        for (name, value) in [
            ("script_id", serde_json::Value::Null),
            ("stdout", "".into()),
            ("stderr", "".into()),
            ("stdout_truncated", false.into()),
            ("env", serde_json::json!([])),
            ("error", serde_json::Value::Null),
        ] {
            fields.insert(name.into(), value);
        }
        assert_eq!(
            serde_json::from_value::<ExecutionRecord>(old).unwrap(),
            record
        );
    }
}
