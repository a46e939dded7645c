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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptRecord {
    pub id: String,
    pub name: String,
    pub language: Language,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub version: u32,
    pub content_hash: String,
    pub size_bytes: u64,
    pub created_at: String,
    pub updated_at: String,
    pub execution_count: u64,
    pub last_executed_at: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Timeout,
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    Api,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionError {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    pub id: String,
    pub script_id: Option<String>,
    pub script_version: Option<u32>,
    pub language: Language,
    pub status: ExecutionStatus,
    pub trigger: Trigger,
    pub parameters: serde_json::Value,
    pub input: Option<String>,
    pub env: Vec<(String, String)>,
    /// The code of an ad-hoc execution (`POST /v1/execute`); never shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Vec<u8>>,
    pub timeout_ms: u64,
    pub memory_mb: u64,
    pub fuel: Option<u64>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub duration_ms: Option<u64>,
    pub exit_code: Option<i32>,
    pub result: Option<serde_json::Value>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub error: Option<ExecutionError>,
    pub fuel_consumed: Option<u64>,
    pub peak_memory_bytes: Option<u64>,
}
