//! The first steps of the script contract, the same for every trigger (the
//! API, a schedule, an HTTP function): an execution record made from a
//! request under the server's limits policy, and its queueing. Below `api`:
//! it knows records, the store and the queue, not HTTP.

use std::sync::Arc;

pub mod run;
mod script_host;
mod worker;

pub use self::worker::Worker;

use serde_json::json;
use tokio::sync::watch;

use crate::config::LimitsConfig;
use crate::jobs::{JobError, Jobs, Settled};
use crate::quotas::{QuotaError, Quotas};
use crate::store::orgs::{InOrg as _, org_field};
use crate::store::{
    ClampedLimit, ExecutionCode, ExecutionRecord, ExecutionStatus, Language, LimitName, Priority,
    ScheduleRecord, ScriptLimits, ScriptRecord, Store, StoreError, Trigger,
};

/// What a caller asks of one run; every field may be left to the defaults.
#[derive(Debug, Default)]
pub struct RunRequest {
    /// A JSON object: the script's `main` argument (components read it on stdin).
    pub parameters: Option<serde_json::Value>,
    pub input: Option<String>,
    pub env: Vec<(String, String)>,
    pub timeout_ms: Option<u64>,
    pub memory_mb: Option<u64>,
    pub fuel: Option<u64>,
    pub priority: Priority,
}

/// What an execution runs.
#[derive(Debug)]
pub struct Target {
    /// The organization it runs in: the script's, or the caller's for
    /// ad-hoc code.
    pub org: String,
    pub language: Language,
    /// A stored script's id and version, or none for ad-hoc code.
    pub script: Option<(String, u32)>,
    /// The script's own limits, used where the request sets none.
    pub defaults: ScriptLimits,
    /// Ad-hoc code.
    pub code: Option<Vec<u8>>,
}

impl Target {
    /// A stored script at `version`, with its own limits as defaults.
    pub fn script(script: &ScriptRecord, version: u32) -> Self {
        Self {
            org: script.org().to_owned(),
            language: script.language,
            script: Some((script.id.clone(), version)),
            defaults: script.limits.unwrap_or_default(),
            code: None,
        }
    }
}

/// Why an execution was not made or not queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// A field of the request is not valid.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The queue refused it: its record is kept, failed, as for any
    /// execution, unless the caller was at its share of the queue (then
    /// nothing was written).
    #[error(transparent)]
    Refused(#[from] JobError),
    /// Its organization has spent a quota: nothing is written, unless it
    /// is a schedule's run (kept, failed, so the skip shows).
    #[error(transparent)]
    Quota(#[from] crate::quotas::Exceeded),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A queued execution record for `request`, its limits capped by the
/// server's maxima (not refused; the record names each limit cut).
///
/// # Errors
///
/// [`SubmitError::Invalid`] for parameters that are not an object or a
/// limit of 0.
pub fn new_record(
    limits: &LimitsConfig,
    request: RunRequest,
    target: Target,
    trigger: Trigger,
    created_by: Option<String>,
) -> Result<ExecutionRecord, SubmitError> {
    let parameters = request.parameters.unwrap_or_else(|| json!({}));
    if !parameters.is_object() {
        return Err(SubmitError::Invalid {
            field: "parameters",
            message: "must be a JSON object".into(),
        });
    }
    for (field, value) in [
        ("timeout_ms", request.timeout_ms),
        ("memory_mb", request.memory_mb),
        ("fuel", request.fuel),
    ] {
        if value == Some(0) {
            return Err(SubmitError::Invalid {
                field,
                message: "must be at least 1".into(),
            });
        }
    }
    let defaults = target.defaults;
    let mut clamped = Vec::new();
    let mut capped = |limit: LimitName, asked: u64, maximum: u64| {
        if asked > maximum {
            clamped.push(ClampedLimit {
                limit,
                requested: asked,
                maximum,
            });
        }
        asked.min(maximum)
    };
    let timeout_ms = capped(
        LimitName::TimeoutMs,
        request
            .timeout_ms
            .or(defaults.timeout_ms)
            .unwrap_or(limits.default_timeout_ms),
        limits.max_timeout_ms,
    );
    let memory_mb = capped(
        LimitName::MemoryMb,
        request
            .memory_mb
            .or(defaults.memory_mb)
            .unwrap_or(limits.default_memory_mb),
        limits.max_memory_mb,
    );
    let fuel = match (
        request.fuel.or(defaults.fuel).or(limits.default_fuel),
        limits.max_fuel,
    ) {
        (Some(fuel), Some(max)) => Some(capped(LimitName::Fuel, fuel, max)),
        (None, Some(max)) => Some(max),
        (fuel, None) => fuel,
    };
    let (script_id, script_version) = target
        .script
        .map_or((None, None), |(id, version)| (Some(id), Some(version)));
    Ok(ExecutionRecord {
        node: None,
        cancel_requested: false,
        org: org_field(&target.org),
        script_id,
        script_version,
        priority: request.priority,
        created_by,
        parameters,
        input: request.input,
        env: request.env,
        code: target.code,
        timeout_ms,
        memory_mb,
        fuel,
        clamped,
        ..ExecutionRecord::queued(
            uuid::Uuid::now_v7().to_string(),
            target.language,
            trigger,
            crate::now(),
        )
    })
}

/// Stores `record` and queues it; the receiver settles when it is final.
/// When `durable_first`, the queued record is flushed before it is queued
/// (its client is told of it at once); otherwise its client waits for the
/// end, and the record is only held until then (`store/held.rs`).
///
/// # Errors
///
/// A store error, or the queue's refusal, after which the record is kept
/// as a failed execution: never a queued record no worker will run.
pub async fn queue(
    store: &Arc<dyn Store>,
    jobs: &Jobs,
    quotas: &Quotas,
    record: &ExecutionRecord,
    durable_first: bool,
) -> Result<watch::Receiver<Settled>, SubmitError> {
    // Counted as the day's from here; kept once a record of it is sure.
    let admitted = match quotas.admit_execution(record.org(), crate::now_ms()).await {
        Ok(admitted) => admitted,
        Err(QuotaError::Store(e)) => return Err(e.into()),
        Err(QuotaError::Exceeded(spent)) => return Err(spent.into()),
    };
    // A caller at its share is refused before anything is written: a retry
    // loop against the bound must not fill the store with refusals.
    jobs.admits(record)?;
    if durable_first {
        store.put_execution(record).await?;
    } else {
        store.hold_execution(record).await?;
    }
    // Stored: from here it runs, or is kept failed.
    admitted.keep();
    if durable_first {
        store.flush().await?;
    }
    enqueue_stored(store, jobs, record).await
}

/// Queues `record`, stored queued; one the queue refuses is kept as a
/// failed execution (QUEUE_FULL, or UNAVAILABLE while draining).
///
/// # Errors
///
/// The queue's refusal, or a store error writing it.
pub async fn enqueue_stored(
    store: &Arc<dyn Store>,
    jobs: &Jobs,
    record: &ExecutionRecord,
) -> Result<watch::Receiver<Settled>, SubmitError> {
    match jobs.enqueue(record) {
        Ok(settled) => Ok(settled),
        Err(e) => {
            let code = match e {
                JobError::QueueFull | JobError::TenantFull(_) | JobError::OrgFull(_) => {
                    ExecutionCode::QUEUE_FULL
                }
                _ => ExecutionCode::UNAVAILABLE,
            };
            let mut refused = record.clone();
            crate::contract::end_unrun(&mut refused, ExecutionStatus::Failed, code, e.to_string());
            // Only over the queued record: on a shared store another node
            // may have claimed it meanwhile, and then it runs there.
            let queued = |current: &ExecutionRecord| current.status == ExecutionStatus::Queued;
            jobs.end(store.as_ref(), &refused, Some(&queued)).await?;
            Err(e.into())
        }
    }
}

/// A run of `script`'s current version for `schedule`, with the schedule's
/// parameters and the script's limits, on behalf of its creator (not
/// stored: the schedule's firing stores it, `schedules.rs`).
///
/// # Errors
///
/// As [`new_record`].
pub fn scheduled_record(
    limits: &LimitsConfig,
    script: &ScriptRecord,
    schedule: &ScheduleRecord,
) -> Result<ExecutionRecord, SubmitError> {
    let request = RunRequest {
        parameters: Some(schedule.parameters.clone()),
        ..RunRequest::default()
    };
    let target = Target::script(script, script.version);
    let mut record = new_record(
        limits,
        request,
        target,
        Trigger::Schedule,
        schedule.created_by.clone(),
    )?;
    record.schedule_id = Some(schedule.id.clone());
    Ok(record)
}

/// `record` ended before it ran because its organization spent a quota:
/// how a schedule's run that the quota refuses is kept, so the skip shows.
pub fn quota_skipped(record: &ExecutionRecord, spent: &crate::quotas::Exceeded) -> ExecutionRecord {
    let mut skipped = record.clone();
    crate::contract::end_unrun(
        &mut skipped,
        ExecutionStatus::Failed,
        ExecutionCode::QUOTA_EXCEEDED,
        spent.to_string(),
    );
    skipped
}

/// The record of one request to an HTTP function: the script's limits
/// (capped by the server's maxima), `trigger: "http"`, and the request's
/// method and path as its parameters. It is not queued: the request's own
/// task runs it.
///
/// # Errors
///
/// None in practice (the parameters are an object and no limit is 0); the
/// type is [`new_record`]'s.
pub fn http_record(
    limits: &LimitsConfig,
    script: &ScriptRecord,
    created_by: Option<String>,
    method: &str,
    path: &str,
) -> Result<ExecutionRecord, SubmitError> {
    let request = RunRequest {
        parameters: Some(json!({ "method": method, "path": path })),
        ..RunRequest::default()
    };
    new_record(
        limits,
        request,
        Target::script(script, script.version),
        Trigger::Http,
        created_by,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> LimitsConfig {
        crate::config::Config::default().limits
    }

    fn ad_hoc() -> Target {
        Target {
            org: crate::store::orgs::DEFAULT_ORG.into(),
            language: Language::Javascript,
            script: None,
            defaults: ScriptLimits::default(),
            code: Some(b"1".to_vec()),
        }
    }

    #[test]
    fn limits_default_to_the_script_s_then_the_server_s_and_are_capped() {
        let limits = limits();
        let record =
            new_record(&limits, RunRequest::default(), ad_hoc(), Trigger::Api, None).unwrap();
        assert_eq!(record.timeout_ms, limits.default_timeout_ms);
        assert_eq!(record.memory_mb, limits.default_memory_mb);
        assert_eq!(record.parameters, json!({}));
        assert!(record.clamped.is_empty(), "{:?}", record.clamped);
        let target = Target {
            defaults: ScriptLimits {
                timeout_ms: Some(1234),
                ..ScriptLimits::default()
            },
            ..ad_hoc()
        };
        let asked = RunRequest {
            memory_mb: Some(u64::MAX),
            ..RunRequest::default()
        };
        let record = new_record(&limits, asked, target, Trigger::Api, None).unwrap();
        assert_eq!(record.timeout_ms, 1234);
        assert_eq!(record.memory_mb, limits.max_memory_mb);
        assert_eq!(
            record.clamped,
            [ClampedLimit {
                limit: LimitName::MemoryMb,
                requested: u64::MAX,
                maximum: limits.max_memory_mb,
            }],
            "the cut limit is named, the others are not"
        );
    }

    #[test]
    fn parameters_that_are_no_object_and_zero_limits_are_refused() {
        let limits = limits();
        let array = RunRequest {
            parameters: Some(json!([1])),
            ..RunRequest::default()
        };
        let zero = RunRequest {
            fuel: Some(0),
            ..RunRequest::default()
        };
        for (request, named) in [(array, "parameters"), (zero, "fuel")] {
            match new_record(&limits, request, ad_hoc(), Trigger::Api, None) {
                Err(SubmitError::Invalid { field, .. }) => assert_eq!(field, named),
                other => panic!("{other:?}"),
            }
        }
    }
}
