//! The queue's workers: each execution the queue hands one is claimed,
//! prepared (its script's artifact at the recorded version, or ad-hoc
//! code), run in the sandbox with the invocation the script contract makes
//! of its record, and stored final; a waiter that syncs hears of it once it
//! is stored, every other once it is on disk.

use std::collections::BTreeMap;
use std::sync::Arc;

use kiln_runtime::{Call, CancelHandle, Source};

use super::run::{self, Hooks, Prepared};
use super::script_host::StoredScript;
use crate::config::LimitsConfig;
use crate::contract::{self, Ran};
use crate::egress::{AllowedHosts, Gateway};
use crate::jobs::{Execute, Jobs, Settled, lost};
use crate::runtimes::{Loaded, Runtimes};
use crate::store::orgs::InOrg as _;
use crate::store::{ExecutionRecord, Language, Store, StoreError};

/// How long a worker keeps trying to store a run's final record while the
/// store does not answer; past it the run is left to the lease reaper
/// (another node) or to recovery at the next start.
const FINAL_RETRY: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs the executions the queue hands it: the artifact of the script (or
/// ad-hoc code) at the recorded version, the invocation the script contract
/// makes of the record, the sandbox run, the final record.
pub struct Worker {
    pub store: Arc<dyn Store>,
    pub runtimes: Arc<Runtimes>,
    pub jobs: Arc<Jobs>,
    pub limits: LimitsConfig,
    pub egress: Arc<Gateway>,
    pub vault: Arc<crate::vault::Vault>,
}

impl Execute for Worker {
    async fn execute(&self, id: &str) {
        let settled = match self.try_execute(id).await {
            Ok(Some(record)) => {
                self.jobs.ended(&self.store, id, record);
                return;
            }
            // Not queued any more. Ended (a cancel): whoever ended it stored
            // its record (and has normally settled it already). Claimed and
            // running (here by another worker, or on another node): its end
            // settles the waiters (`leases::follow` for another node's).
            // Queued here again (its organization is at its bound on all
            // the nodes): it waits its turn.
            Ok(None) if self.jobs.is_queued(id) => return,
            Ok(None) => match self.store.execution(id).await {
                Ok(Some(record)) if !record.status.is_final() => return,
                _ => Settled::Stored,
            },
            Err(e) => lost(id, &e),
        };
        self.jobs.settle(id, settled);
    }
}

impl Worker {
    /// The script's config values, opened; none for ad-hoc code. One that
    /// does not open (the master key changed) is left out and logged.
    async fn config_of(&self, record: &ExecutionRecord) -> BTreeMap<String, String> {
        let Some(script_id) = &record.script_id else {
            return BTreeMap::new();
        };
        let sealed = match self.store.script_config(script_id).await {
            Ok(sealed) => sealed,
            Err(e) => {
                tracing::error!(error = %e, script = %script_id, "cannot read a script's config");
                return BTreeMap::new();
            }
        };
        // Shared secrets granted to the script first: its own config wins
        // on a name both have.
        let mut config = self.shared_secrets_of(record.org(), script_id).await;
        config.extend(sealed.into_iter().filter_map(|(key, value)| {
            let slot = crate::vault::config_slot(script_id, &key);
            match self.vault.open_value(&slot, &value) {
                Ok(value) => Some((key, value)),
                Err(e) => {
                    tracing::error!(error = %e, script = %script_id, key = %key,
                        "a config value does not open; the run goes without it");
                    None
                }
            }
        }));
        config
    }

    /// The shared secrets an admin granted to a script, opened.
    async fn shared_secrets_of(&self, org: &str, script_id: &str) -> BTreeMap<String, String> {
        let secrets = match self.store.shared_secrets().await {
            Ok(secrets) => secrets,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the shared secrets");
                return BTreeMap::new();
            }
        };
        secrets
            .iter()
            .filter(|secret| secret.granted_to(org, script_id))
            .filter_map(|secret| {
                let slot = crate::vault::shared_slot(&secret.key());
                match self.vault.open_value(&slot, &secret.value) {
                    Ok(value) => Some((secret.name.clone(), value)),
                    Err(e) => {
                        tracing::error!(error = %e, secret = %secret.name,
                            "a shared secret does not open; the run goes without it");
                        None
                    }
                }
            })
            .collect()
    }

    /// The record's variables with sealed values opened, then the contract's
    /// record variables (`KILN_SCHEDULE_ID`).
    fn opened_env(&self, record: &ExecutionRecord) -> Vec<(String, String)> {
        crate::contract::record_env(record)
            .into_iter()
            .map(|(name, value)| {
                let slot = crate::vault::env_slot(&record.id, &name);
                let value = self.vault.open_value(&slot, &value).unwrap_or_else(|e| {
                    tracing::error!(error = %e, execution = %record.id, name = %name,
                        "an env value does not open; the run sees it empty");
                    String::new()
                });
                (name, value)
            })
            .collect()
    }

    /// Runs a queued execution and stores its final record (not flushed);
    /// `None` if it was no longer queued.
    async fn try_execute(&self, id: &str) -> Result<Option<ExecutionRecord>, StoreError> {
        let Some((mut record, cancel)) = self.jobs.claim(self.store.as_ref(), id).await? else {
            return Ok(None);
        };
        self.run(&mut record, cancel).await;
        // Still held as running here while the final record waits for the
        // store, so its lease is renewed once the store answers again.
        let result = self.store_final(&record).await;
        self.jobs.release(id);
        // A run taken from this node meanwhile: whoever ended it stored it.
        result.map(|kept| kept.then_some(record))
    }

    /// Stores a run's final record, trying again while the store does not
    /// answer (an outage of the database) for up to [`FINAL_RETRY`]: the
    /// outcome of a run that ended meanwhile is kept, not lost to an
    /// INTERRUPTED. The worker waits meanwhile, so what waits is bounded by
    /// the workers.
    async fn store_final(&self, record: &ExecutionRecord) -> Result<bool, StoreError> {
        let began = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(100);
        loop {
            match self
                .jobs
                .record_run_final(self.store.as_ref(), record)
                .await
            {
                Err(StoreError::Unavailable(e)) if began.elapsed() < FINAL_RETRY => {
                    tracing::warn!(execution = %record.id, error = %e,
                        "storing a run's final record failed; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(2));
                }
                done => return done,
            }
        }
    }

    async fn run(&self, record: &mut ExecutionRecord, cancel: CancelHandle) {
        // `running` is not flushed here: readers flush before they report a
        // record that is not final, and the final record is flushed (by
        // `execute`, or by the waiting handler it announces it to) before
        // anyone is told of it.
        // A crash before then finds it running (INTERRUPTED) or, if sled had
        // not written it yet, queued (run again).
        let parameters = record.parameters.to_string();
        match self.prepare(record, &parameters).await {
            Ok((prepared, allowed_hosts, compile_wait_ms)) => {
                record.compile_wait_ms = compile_wait_ms;
                let config = self.config_of(record).await;
                let mask: Vec<String> = config.values().cloned().collect();
                // The request's variables (opened), then the script's config
                // values: a script reads its secrets as `process.env.NAME`
                // or `os.environ["NAME"]`.
                let mut env = self.opened_env(record);
                env.extend(config.iter().map(|(k, v)| (k.clone(), v.clone())));
                let mut hooks = Hooks {
                    cancel: Some(cancel),
                    egress: Some(self.egress.for_run(allowed_hosts)),
                    env: Some(env),
                    mask: mask.clone(),
                    ..Hooks::default()
                };
                // A kiln:script component of a stored script reaches that
                // script's key-value store and config; an ad-hoc one none.
                if let (Call::Json { .. }, Some(script_id)) = (&prepared.call, &record.script_id) {
                    hooks.script_host = Some(Arc::new(StoredScript::new(
                        self.store.clone(),
                        script_id,
                        config,
                        &self.limits,
                    )));
                }
                let live = self.jobs.output.publisher(&record.id);
                if record.interactive {
                    hooks.live_stdin = live.stdin_receiver();
                }
                hooks.on_output = Some(Arc::new(move |kind, bytes: &[u8]| {
                    // Per chunk: a secret written in two pieces shows in the
                    // live stream, never in the record.
                    let text = String::from_utf8_lossy(bytes);
                    live.publish(kind, &crate::vault::mask(&text, &mask));
                }));
                let sandbox = self.runtimes.sandbox();
                let jobs = &self.jobs;
                run::run(
                    sandbox,
                    record,
                    &parameters,
                    prepared,
                    crate::contract::OutputCaps::of(&self.limits),
                    hooks,
                    || jobs.interrupting(),
                )
                .await;
            }
            Err(message) => contract::finish(record, Ran::Failed(message)),
        }
    }

    /// The artifact to run, what to call in it, and the hosts it may send
    /// requests to (the script's, or an ad-hoc run's own), and how long it
    /// waited for its code when that was not in memory (compiled, or read
    /// from the compile cache, for it).
    async fn prepare(
        &self,
        record: &ExecutionRecord,
        parameters: &str,
    ) -> Result<(Prepared, AllowedHosts, Option<u64>), String> {
        // Patterns were checked when they were stored; one that no longer
        // parses allows nothing rather than failing the run.
        let allowed = |patterns: &[String]| AllowedHosts::parse(patterns).unwrap_or_default();
        let deleted = || "the script was deleted before it ran".to_string();
        match (&record.script_id, record.script_version, &record.code) {
            (Some(script_id), Some(version), _) => {
                let script = self
                    .store
                    .script(record.org(), script_id)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(deleted)?;
                let content = async || {
                    self.store
                        .script_content(script_id, version)
                        .await
                        .map_err(|e| e.to_string())?
                        .ok_or_else(deleted)
                };
                let (loaded, call) = if record.language == Language::Wasm {
                    let owner = crate::runtimes::caller_of(script.created_by.as_deref());
                    let loaded = self
                        .runtimes
                        .component(script_id, version, content, &owner)
                        .await
                        .map_err(|e| e.to_string())?;
                    let call = contract::component_call(loaded.artifact.shape(), parameters);
                    (loaded, call)
                } else {
                    self.script_call(record.language, content().await?, parameters)
                        .await?
                };
                let hosts = allowed(&script.allowed_hosts);
                let waited = loaded.waited_ms();
                Ok((
                    Prepared {
                        artifact: loaded.artifact,
                        call,
                        name: script.name,
                    },
                    hosts,
                    waited,
                ))
            }
            (None, _, Some(code)) if record.language == Language::Wasm => {
                // Compiled when it was submitted; found in the cache here.
                let caller = crate::runtimes::caller_of(record.created_by.as_deref());
                let loaded = self
                    .runtimes
                    .load_timed(code.clone(), Some(&caller))
                    .await
                    .map_err(|e| e.to_string())?;
                let call = contract::component_call(loaded.artifact.shape(), parameters);
                let waited = loaded.waited_ms();
                Ok((
                    Prepared {
                        artifact: loaded.artifact,
                        call,
                        name: "ad-hoc".into(),
                    },
                    allowed(&record.allowed_hosts),
                    waited,
                ))
            }
            (None, _, Some(code)) => {
                let (loaded, call) = self
                    .script_call(record.language, code.clone(), parameters)
                    .await?;
                let waited = loaded.waited_ms();
                Ok((
                    Prepared {
                        artifact: loaded.artifact,
                        call,
                        name: "ad-hoc".into(),
                    },
                    allowed(&record.allowed_hosts),
                    waited,
                ))
            }
            _ => Err("the execution names no script and carries no code".into()),
        }
    }

    /// The language runtime and the call that runs `source` on it.
    async fn script_call(
        &self,
        language: Language,
        source: Vec<u8>,
        parameters: &str,
    ) -> Result<(Loaded, Call), String> {
        let source = Source::decode(source).map_err(|e| format!("the stored script: {e}"))?;
        let runtime = self
            .runtimes
            .get(language)
            .await
            .map_err(|e| e.to_string())?;
        Ok((runtime, contract::script_call(source, parameters)))
    }
}
