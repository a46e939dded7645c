//! What one node tells the others sharing its store, as it happens: a
//! cancel for the node that runs an execution, the output and the end of a
//! run for the nodes that stream it or wait for it. Signals are best
//! effort (a node that was away misses them): what they carry is also in
//! the records, which every node reads again each second
//! (`jobs::leases::follow`), so a lost one costs a second, not an answer.
//! Only PostgreSQL carries them (`LISTEN`/`NOTIFY`); sled has one node.

use kiln_runtime::OutputKind;
use serde::{Deserialize, Serialize};

/// One message between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "signal", rename_all = "snake_case")]
pub enum Signal {
    /// Stop execution `id` (asked on another node than the one running it).
    Cancel { id: String },
    /// Node `node` streams execution `id` or waits for it: the node that
    /// runs it sends it the output from `have` (the bytes of stdout and
    /// stderr it holds; none: it only waits for the end), then the rest and
    /// the end.
    Watch {
        id: String,
        node: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        have: Option<[u64; 2]>,
    },
    /// Output of execution `id`, `text` from byte `at` of its `stream`: for
    /// node `to` only (what it lacks, when it starts watching), or for
    /// every node that watches it. A node applies only text that continues
    /// what it holds.
    Output {
        id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
        stream: OutputKind,
        #[serde(default)]
        at: u64,
        text: String,
    },
    /// Execution `id` is final, its record stored.
    Ended { id: String },
}
