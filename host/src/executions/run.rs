//! One run of an execution record in the sandbox, the same for a queued
//! execution and `kiln run`: the invocation the script contract makes of the
//! record, the run, and the outcome written into the record, now final.

use std::sync::Arc;

use kiln_runtime::{
    Artifact, Call, CancelHandle, Egress, Invocation, OutputSink, Sandbox, ScriptHost,
};

use crate::contract::{self, Ran};
use crate::egress::RunEgress;
use crate::store::ExecutionRecord;

/// What a record runs: the artifact, what to call in it, and the name it
/// runs under (the script's, "ad-hoc", or `kiln run`'s file).
pub struct Prepared {
    pub artifact: Arc<Artifact>,
    pub call: Call,
    pub name: String,
}

/// How the host takes part in a run beyond the contract.
#[derive(Default)]
pub struct Hooks {
    pub cancel: Option<CancelHandle>,
    pub on_output: Option<OutputSink>,
    pub script_host: Option<Arc<dyn ScriptHost>>,
    /// Where the run's outbound HTTP goes; none refuses it.
    pub egress: Option<RunEgress>,
    /// The guest's variables before the contract's own, when not the
    /// record's as stored (the server opens sealed values and adds the
    /// script's config values).
    pub env: Option<Vec<(String, String)>>,
    /// Values masked (`****`) in what the run leaves in its record: its
    /// output, result and error.
    pub mask: Vec<String>,
    /// An interactive execution's stdin after its input, as it arrives.
    pub live_stdin: Option<tokio::sync::mpsc::Receiver<bytes::Bytes>>,
}

/// Runs `record` in `sandbox` with its output capped by `caps`,
/// and writes how it ended into it (final, not stored). `parameters` is the
/// record's, serialized; `interrupting` says whether a stop of the run was
/// the server's own (draining).
pub async fn run(
    sandbox: &Sandbox,
    record: &mut ExecutionRecord,
    parameters: &str,
    prepared: Prepared,
    caps: contract::OutputCaps,
    hooks: Hooks,
    interrupting: impl Fn() -> bool,
) {
    let (env, stdin) = contract::environment(
        hooks.env.unwrap_or_else(|| contract::record_env(record)),
        &record.id,
        &prepared.name,
        Some(parameters),
        record.input.as_deref(),
        record.interactive,
        &prepared.call,
    );
    let invocation = Invocation {
        call: prepared.call,
        args: vec![prepared.name],
        env,
        stdin,
        live_stdin: hooks.live_stdin,
        limits: contract::limits_of(record, caps),
        cancel: hooks.cancel,
        on_output: hooks.on_output,
        script_host: hooks.script_host,
        egress: hooks.egress.clone().map(|e| Arc::new(e) as Arc<dyn Egress>),
    };
    let ran = match sandbox.run(&prepared.artifact, invocation).await {
        Ok(outcome) => Ran::Outcome {
            outcome,
            interrupted: interrupting(),
        },
        Err(e) => Ran::Failed(format!("the sandbox failed: {e}")),
    };
    contract::finish(record, ran);
    if let Some(egress) = hooks.egress {
        record.http_requests = egress.take_log();
    }
    mask_secrets(record, &hooks.mask);
}

/// Hides `secrets` wherever a run may have echoed them into its record.
fn mask_secrets(record: &mut ExecutionRecord, secrets: &[String]) {
    use crate::vault::mask;
    if secrets.is_empty() {
        return;
    }
    record.stdout = mask(&record.stdout, secrets);
    record.stderr = mask(&record.stderr, secrets);
    if let Some(error) = &mut record.error {
        error.message = mask(&error.message, secrets);
        if let Some(stack) = &mut error.stack {
            *stack = mask(stack, secrets);
        }
    }
    if let Some(result) = &mut record.result {
        mask_json(result, secrets);
    }
    for request in &mut record.http_requests {
        request.path = mask(&request.path, secrets);
        if let Some(error) = &mut request.error {
            *error = mask(error, secrets);
        }
    }
}

fn mask_json(value: &mut serde_json::Value, secrets: &[String]) {
    match value {
        serde_json::Value::String(text) => *text = crate::vault::mask(text, secrets),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| mask_json(v, secrets)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|v| mask_json(v, secrets)),
        _ => {}
    }
}
