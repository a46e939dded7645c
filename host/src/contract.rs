//! The script contract (DESIGN.md) as the host applies it to every run,
//! whatever started it (the queue's workers, an HTTP function request,
//! `kiln run`): what the guest sees of its environment and stdin, what is
//! called in a component, the sandbox limits of a record, and how an
//! outcome becomes the final record. On the bottom floor: records and
//! `kiln-runtime` only.

use std::time::Duration;

use kiln_runtime::{Call, Limits, Outcome, Shape, Source, Status};

use crate::store::{ExecutionCode, ExecutionError, ExecutionRecord, ExecutionStatus};

/// The environment and stdin of a run: the caller's variables, then
/// `KILN_EXECUTION_ID` and `KILN_SCRIPT_NAME`; a command (`Call::Main`) also
/// gets its parameters (when it has any) as `KILN_PARAMETERS` and, unless it
/// was given input or is interactive (its stdin is then its user's), on
/// stdin. A script gets its parameters as `main`'s argument instead.
pub fn environment(
    mut env: Vec<(String, String)>,
    id: &str,
    name: &str,
    parameters: Option<&str>,
    input: Option<&str>,
    interactive: bool,
    call: &Call,
) -> (Vec<(String, String)>, Vec<u8>) {
    env.push(("KILN_EXECUTION_ID".into(), id.into()));
    env.push(("KILN_SCRIPT_NAME".into(), name.into()));
    let command = matches!(call, Call::Main);
    if command && let Some(parameters) = parameters {
        env.push(("KILN_PARAMETERS".into(), parameters.into()));
    }
    let stdin = match (input, parameters) {
        (Some(input), _) => input.as_bytes().to_vec(),
        (None, Some(parameters)) if command && !interactive => parameters.as_bytes().to_vec(),
        (None, _) => Vec::new(),
    };
    (env, stdin)
}

/// The variables a record gives its guest before the contract's own: the
/// caller's, and `KILN_SCHEDULE_ID` for a run a schedule started.
pub fn record_env(record: &ExecutionRecord) -> Vec<(String, String)> {
    let mut env = record.env.clone();
    if let Some(schedule) = &record.schedule_id {
        env.push(("KILN_SCHEDULE_ID".into(), schedule.clone()));
    }
    env
}

/// What to call in a component of `shape`: `run` with the parameters for a
/// `kiln:script` one, `wasi:cli/run` otherwise.
pub fn component_call(shape: Shape, parameters: &str) -> Call {
    match shape {
        Shape::Script => Call::Json {
            params: parameters.into(),
        },
        _ => Call::Main,
    }
}

/// What to call in a language runtime to run `source` with the parameters.
pub fn script_call(source: Source, parameters: &str) -> Call {
    Call::Script {
        source: source.into(),
        params: parameters.into(),
    }
}

/// What a run may leave behind: each output stream's bytes (the rest is
/// dropped and flagged) and its result's (past it the run fails).
#[derive(Debug, Clone, Copy)]
pub struct OutputCaps {
    pub stream_bytes: usize,
    pub result_bytes: usize,
}

impl OutputCaps {
    pub fn of(limits: &crate::config::LimitsConfig) -> Self {
        Self {
            stream_bytes: limits.output_bytes,
            result_bytes: limits.result_bytes,
        }
    }
}

/// The sandbox limits an execution record asks for.
pub fn limits_of(record: &ExecutionRecord, caps: OutputCaps) -> Limits {
    Limits {
        fuel: record.fuel,
        memory_bytes: record.memory_mb.saturating_mul(1 << 20),
        timeout: Duration::from_millis(record.timeout_ms),
        stdout_bytes: caps.stream_bytes,
        stderr_bytes: caps.stream_bytes,
        result_bytes: caps.result_bytes,
    }
}

/// How a run ended, from the host's side.
pub enum Ran {
    /// The sandbox ran it; `interrupted` when a stop was the server's own
    /// (draining), not the guest's or a caller's.
    Outcome { outcome: Outcome, interrupted: bool },
    /// It could not be run: the sandbox failed, or the script was gone.
    Failed(String),
}

/// Writes how the run ended into `record`, which is then final (its
/// `completed_at` set). A run the server stopped is `INTERRUPTED`; one that
/// could not run, `INTERNAL_ERROR`.
pub fn finish(record: &mut ExecutionRecord, ran: Ran) {
    match ran {
        Ran::Outcome {
            outcome,
            interrupted,
        } => {
            let cancelled = outcome.status == Status::Cancelled;
            apply_outcome(record, outcome);
            if cancelled && interrupted {
                fail(
                    record,
                    ExecutionCode::INTERRUPTED,
                    "the server shut down before this execution finished",
                );
            }
        }
        Ran::Failed(message) => fail(record, ExecutionCode::INTERNAL_ERROR, message),
    }
    record.completed_at = Some(crate::now());
}

fn apply_outcome(record: &mut ExecutionRecord, outcome: Outcome) {
    record.status = match outcome.status {
        Status::Completed => ExecutionStatus::Completed,
        Status::Failed => ExecutionStatus::Failed,
        Status::Timeout => ExecutionStatus::Timeout,
        Status::Cancelled => ExecutionStatus::Cancelled,
    };
    record.exit_code = outcome.exit_code;
    record.result = outcome
        .result
        .as_deref()
        .and_then(|json| serde_json::from_str(json).ok());
    record.stdout = String::from_utf8_lossy(&outcome.stdout).into_owned();
    record.stderr = String::from_utf8_lossy(&outcome.stderr).into_owned();
    record.stdout_truncated = outcome.stdout_truncated;
    record.stderr_truncated = outcome.stderr_truncated;
    record.error = outcome.error.map(|e| ExecutionError {
        code: e.code.into(),
        message: e.message,
        stack: e.stack,
        line: e.line,
        column: e.column,
    });
    record.fuel_consumed = Some(outcome.fuel_consumed);
    record.peak_memory_bytes = Some(outcome.peak_memory_bytes);
    record.duration_ms = Some(crate::millis(outcome.duration));
}

/// Ends `record` with no outcome of the sandbox's (cancelled while queued,
/// refused by the queue, found running after a crash): final now.
pub fn end_unrun(
    record: &mut ExecutionRecord,
    status: ExecutionStatus,
    code: ExecutionCode,
    message: impl Into<String>,
) {
    record.status = status;
    record.error = Some(ExecutionError::new(code, message));
    record.completed_at = Some(crate::now());
}

/// Marks `record` failed with `code`.
pub fn fail(record: &mut ExecutionRecord, code: ExecutionCode, message: impl Into<String>) {
    record.status = ExecutionStatus::Failed;
    record.error = Some(ExecutionError::new(code, message));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(env: &[(String, String)]) -> Vec<&str> {
        env.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn a_command_gets_its_parameters_in_the_environment_and_on_stdin_unless_given_input() {
        let base = vec![("MINE".to_string(), "1".to_string())];
        let (env, stdin) = environment(
            base.clone(),
            "e1",
            "hello",
            Some("{}"),
            None,
            false,
            &Call::Main,
        );
        assert_eq!(
            names(&env),
            [
                "MINE",
                "KILN_EXECUTION_ID",
                "KILN_SCRIPT_NAME",
                "KILN_PARAMETERS"
            ]
        );
        assert_eq!(stdin, b"{}");
        let (env, stdin) = environment(
            base,
            "e1",
            "hello",
            Some("{}"),
            Some("typed"),
            false,
            &Call::Main,
        );
        assert!(names(&env).contains(&"KILN_PARAMETERS"));
        assert_eq!(stdin, b"typed");
        let (env, stdin) = environment(Vec::new(), "e1", "hello", None, None, false, &Call::Main);
        assert_eq!(names(&env), ["KILN_EXECUTION_ID", "KILN_SCRIPT_NAME"]);
        assert!(stdin.is_empty());
        // Interactive: stdin is the user's, after any input.
        let (env, stdin) = environment(
            Vec::new(),
            "e1",
            "hello",
            Some("{}"),
            None,
            true,
            &Call::Main,
        );
        assert!(names(&env).contains(&"KILN_PARAMETERS"));
        assert!(stdin.is_empty());
        let (_, stdin) = environment(
            Vec::new(),
            "e1",
            "hello",
            Some("{}"),
            Some("a"),
            true,
            &Call::Main,
        );
        assert_eq!(stdin, b"a");
    }

    #[test]
    fn a_script_gets_its_parameters_as_an_argument_only() {
        let call = Call::Json {
            params: "{}".into(),
        };
        let (env, stdin) = environment(Vec::new(), "e1", "s", Some("{}"), None, false, &call);
        assert_eq!(names(&env), ["KILN_EXECUTION_ID", "KILN_SCRIPT_NAME"]);
        assert!(stdin.is_empty());
    }

    fn record() -> ExecutionRecord {
        let limits = crate::config::Config::default().limits;
        crate::executions::new_record(
            &limits,
            crate::executions::RunRequest::default(),
            crate::executions::Target {
                org: crate::store::orgs::DEFAULT_ORG.into(),
                language: crate::store::Language::Javascript,
                script: None,
                defaults: crate::store::ScriptLimits::default(),
                code: None,
            },
            crate::store::Trigger::Api,
            None,
        )
        .unwrap()
    }

    #[test]
    fn a_scheduled_run_sees_its_schedule() {
        let mut record = record();
        assert!(names(&record_env(&record)).is_empty());
        record.schedule_id = Some("s1".into());
        assert_eq!(
            record_env(&record),
            [("KILN_SCHEDULE_ID".to_string(), "s1".to_string())]
        );
    }

    #[test]
    fn a_run_that_could_not_start_is_an_internal_error_and_final() {
        let mut record = record();
        finish(&mut record, Ran::Failed("the script was deleted".into()));
        assert_eq!(record.status, ExecutionStatus::Failed);
        assert_eq!(record.error.unwrap().code, ExecutionCode::INTERNAL_ERROR);
        assert!(record.completed_at.is_some());
    }
}
