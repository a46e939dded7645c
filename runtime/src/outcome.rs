//! What became of a run. Guest misbehaviour is recorded here, never returned as
//! an `Err`: the host stores and reports it like any other result.

use std::time::Duration;

use wasmtime::Trap;
use wasmtime_wasi::I32Exit;

use crate::bindings::{Failure, FailureKind};

/// The final state of a run, as in the API's execution `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Ran to the end and exited 0.
    Completed,
    /// Trapped, exited non-zero, hit the memory cap or ran out of fuel.
    Failed,
    /// Still running at the wall-clock deadline.
    Timeout,
    /// Stopped through its [`CancelHandle`](crate::CancelHandle).
    Cancelled,
}

/// Why a run did not complete, as in the API's `error.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// The guest trapped (unreachable, out-of-bounds access, stack overflow…).
    Trap,
    /// The guest exited with a non-zero status.
    ExitCode,
    /// The guest needed more memory than its cap.
    MemoryLimit,
    /// The guest used its whole fuel budget.
    FuelExhausted,
    /// The wall-clock deadline passed.
    Timeout,
    /// The run was cancelled.
    Cancelled,
    /// A script's source did not parse (found at run time; a host that checks
    /// scripts at upload reports it there).
    CompileError,
    /// A script threw (or rejected) instead of returning.
    ScriptError,
    /// An HTTP function gave no usable response: none at all, an error in
    /// its place, a body that broke off or one over the size limit.
    ResponseError,
    /// A script returned more JSON than a run may keep.
    ResultTooLarge,
}

impl ErrorCode {
    /// The code as the API writes it, e.g. `FUEL_EXHAUSTED`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Trap => "TRAP",
            ErrorCode::ExitCode => "EXIT_CODE",
            ErrorCode::MemoryLimit => "MEMORY_LIMIT",
            ErrorCode::FuelExhausted => "FUEL_EXHAUSTED",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::Cancelled => "CANCELLED",
            ErrorCode::CompileError => "COMPILE_ERROR",
            ErrorCode::ScriptError => "SCRIPT_ERROR",
            ErrorCode::ResponseError => "RESPONSE_ERROR",
            ErrorCode::ResultTooLarge => "RESULT_TOO_LARGE",
        }
    }
}

/// A failure's code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GuestError {
    /// Machine-readable reason.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
    /// A script's stack trace or traceback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// 1-based line of a script's syntax error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// 1-based column of a script's syntax error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

impl GuestError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            stack: None,
            line: None,
            column: None,
        }
    }

    /// A script failure as the language runtime reported it.
    pub(crate) fn from_script(failure: Failure) -> Self {
        let code = match failure.kind {
            FailureKind::Syntax => ErrorCode::CompileError,
            FailureKind::Runtime => ErrorCode::ScriptError,
        };
        Self {
            code,
            message: failure.message,
            stack: failure.stack,
            line: failure.line,
            column: failure.column,
        }
    }
}

/// Everything a run produced and consumed.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Final status.
    pub status: Status,
    /// The guest's exit status when it exited (0 for a normal return), `None`
    /// when it trapped or was stopped.
    pub exit_code: Option<i32>,
    /// A script's return value as JSON text (`None` for commands and failures).
    pub result: Option<String>,
    /// Captured stdout, at most the limit.
    pub stdout: Vec<u8>,
    /// Captured stderr, at most the limit.
    pub stderr: Vec<u8>,
    /// Whether stdout output was dropped at the cap.
    pub stdout_truncated: bool,
    /// Whether stderr output was dropped at the cap.
    pub stderr_truncated: bool,
    /// Why the run failed; `None` when it completed.
    pub error: Option<GuestError>,
    /// Fuel units consumed.
    pub fuel_consumed: u64,
    /// The largest total linear memory the guest held, in bytes.
    pub peak_memory_bytes: u64,
    /// Wall-clock time from the start of instantiation to the end.
    pub duration: Duration,
}

impl Outcome {
    /// The error code, if the run failed.
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.error.as_ref().map(|e| e.code)
    }
}

/// How the guest's call ended, before classification.
pub(crate) enum Ending {
    /// A command's `wasi:cli/run` returned (`Err(())` is exit status 1).
    Exited(Result<(), ()>),
    /// A language runtime's `run` returned.
    Script(Result<String, Failure>),
    /// The guest trapped or exited through `wasi:cli/exit`.
    Trapped(wasmtime::Error),
    TimedOut(Duration),
    Cancelled,
}

/// Facts from the store that name a failure more precisely than the trap.
pub(crate) struct Evidence {
    /// Total memory the guest asked for when the cap refused it.
    pub memory_refused: Option<u64>,
    pub memory_limit: u64,
}

/// How a run ended, classified.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub status: Status,
    pub exit_code: Option<i32>,
    pub result: Option<String>,
    pub error: Option<GuestError>,
}

impl Verdict {
    fn completed(result: Option<String>) -> Self {
        Self {
            status: Status::Completed,
            exit_code: Some(0),
            result,
            error: None,
        }
    }

    /// Turns a completed run into a failed one (the run returned, but what
    /// it produced is unusable).
    pub(crate) fn fail(&mut self, error: GuestError) {
        *self = Self::failed(self.exit_code, error);
    }

    /// Fails a run whose result is over `max_bytes` of JSON.
    pub(crate) fn cap_result(&mut self, max_bytes: usize) {
        let Some(len) = self.result.as_ref().map(String::len) else {
            return;
        };
        if len > max_bytes {
            self.fail(GuestError::new(
                ErrorCode::ResultTooLarge,
                format!("the script returned {len} bytes of JSON; a result may have {max_bytes}"),
            ));
        }
    }

    fn failed(exit_code: Option<i32>, error: GuestError) -> Self {
        Self {
            status: Status::Failed,
            exit_code,
            result: None,
            error: Some(error),
        }
    }
}

/// Turns an ending into status, exit code, result and error.
pub(crate) fn classify(ending: Ending, evidence: &Evidence) -> Verdict {
    let verdict = match ending {
        Ending::Exited(Ok(())) => return Verdict::completed(None),
        Ending::Exited(Err(())) => Verdict::failed(
            Some(1),
            GuestError::new(ErrorCode::ExitCode, "the guest exited with status 1"),
        ),
        Ending::Script(Ok(json)) => return Verdict::completed(Some(json)),
        Ending::Script(Err(failure)) => Verdict::failed(None, GuestError::from_script(failure)),
        Ending::Trapped(err) => {
            if let Some(exit) = err.downcast_ref::<I32Exit>() {
                if exit.0 == 0 {
                    return Verdict::completed(None);
                }
                let message = format!("the guest exited with status {}", exit.0);
                Verdict::failed(Some(exit.0), GuestError::new(ErrorCode::ExitCode, message))
            } else if let Some(Trap::OutOfFuel) = err.downcast_ref::<Trap>() {
                Verdict::failed(
                    None,
                    GuestError::new(
                        ErrorCode::FuelExhausted,
                        "the guest used its whole fuel budget",
                    ),
                )
            } else if let Some(cap) = host_cap(&err) {
                let message =
                    format!("the guest asked the host to hold more than a run may: {cap}");
                Verdict::failed(None, GuestError::new(ErrorCode::MemoryLimit, message))
            } else {
                Verdict::failed(None, GuestError::new(ErrorCode::Trap, trap_message(&err)))
            }
        }
        Ending::TimedOut(after) => Verdict {
            status: Status::Timeout,
            exit_code: None,
            result: None,
            error: Some(GuestError::new(
                ErrorCode::Timeout,
                format!("the guest was still running after {} ms", after.as_millis()),
            )),
        },
        Ending::Cancelled => Verdict {
            status: Status::Cancelled,
            exit_code: None,
            result: None,
            error: Some(GuestError::new(
                ErrorCode::Cancelled,
                "the run was cancelled",
            )),
        },
    };
    // A guest refused memory usually fails some other way afterwards (an abort
    // in its allocator, an out-of-memory exception, an exit code): name the
    // cause, not the symptom.
    match (verdict.status, evidence.memory_refused) {
        (Status::Failed, Some(wanted)) => Verdict::failed(
            verdict.exit_code,
            GuestError::new(
                ErrorCode::MemoryLimit,
                format!(
                    "the guest asked for {wanted} bytes of memory; the limit is {} bytes",
                    evidence.memory_limit
                ),
            ),
        ),
        _ => verdict,
    }
}

/// Which cap on what the host holds for a run (`wasi.rs`) stopped the
/// guest, if one did: its resource table is full, or a set of header fields
/// is too large.
fn host_cap(err: &wasmtime::Error) -> Option<String> {
    use wasmtime::component::ResourceTableError;
    use wasmtime_wasi_http::FieldMapError;
    match err.downcast_ref::<ResourceTableError>() {
        Some(full @ ResourceTableError::Full) => return Some(full.to_string()),
        Some(_) => return None,
        None => {}
    }
    match err.downcast_ref::<FieldMapError>()? {
        fields @ (FieldMapError::TooManyFields | FieldMapError::TotalSizeTooBig) => {
            Some(fields.to_string())
        }
        _ => None,
    }
}

/// The trap's own description (e.g. "wasm trap: integer divide by zero") plus
/// the innermost context wasmtime attached, without the full backtrace.
fn trap_message(err: &wasmtime::Error) -> String {
    match err.downcast_ref::<Trap>() {
        Some(trap) => format!("the guest trapped: {trap}"),
        None => format!("the guest failed: {}", err.root_cause()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_EVIDENCE: Evidence = Evidence {
        memory_refused: None,
        memory_limit: 100,
    };

    fn trapped(err: impl Into<wasmtime::Error>) -> Verdict {
        classify(Ending::Trapped(err.into()), &NO_EVIDENCE)
    }

    #[test]
    fn codes_serialize_as_they_are_named() {
        for code in [
            ErrorCode::Trap,
            ErrorCode::FuelExhausted,
            ErrorCode::ScriptError,
            ErrorCode::CompileError,
            ErrorCode::ResponseError,
            ErrorCode::ResultTooLarge,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }

    #[test]
    fn a_result_over_its_cap_fails_the_run() {
        let mut verdict = classify(Ending::Script(Ok("[1,2,3]".into())), &NO_EVIDENCE);
        verdict.cap_result(7);
        assert_eq!(verdict.status, Status::Completed);
        verdict.cap_result(6);
        assert_eq!(verdict.status, Status::Failed);
        assert_eq!(verdict.result, None);
        assert_eq!(
            verdict.error.map(|e| e.code),
            Some(ErrorCode::ResultTooLarge)
        );
    }

    #[test]
    fn exit_zero_is_completion() {
        assert_eq!(
            trapped(wasmtime::Error::new(I32Exit(0))),
            Verdict::completed(None)
        );
        assert_eq!(
            classify(Ending::Exited(Ok(())), &NO_EVIDENCE),
            Verdict::completed(None)
        );
    }

    #[test]
    fn non_zero_exit_keeps_its_code() {
        let verdict = trapped(wasmtime::Error::new(I32Exit(42)));
        assert_eq!(
            (verdict.status, verdict.exit_code),
            (Status::Failed, Some(42))
        );
        assert_eq!(verdict.error.unwrap().code, ErrorCode::ExitCode);
        let verdict = classify(Ending::Exited(Err(())), &NO_EVIDENCE);
        assert_eq!(verdict.exit_code, Some(1));
    }

    #[test]
    fn out_of_fuel_is_named() {
        let verdict = trapped(wasmtime::Error::new(Trap::OutOfFuel));
        assert_eq!(verdict.error.unwrap().code, ErrorCode::FuelExhausted);
    }

    #[test]
    fn other_traps_say_what_happened() {
        let verdict = trapped(wasmtime::Error::new(Trap::IntegerDivisionByZero));
        let error = verdict.error.unwrap();
        assert_eq!(error.code, ErrorCode::Trap);
        assert!(
            error.message.contains("divide by zero"),
            "{}",
            error.message
        );
    }

    #[test]
    fn a_failure_after_a_refused_grow_is_a_memory_limit() {
        let evidence = Evidence {
            memory_refused: Some(200),
            memory_limit: 100,
        };
        let verdict = classify(
            Ending::Trapped(wasmtime::Error::new(Trap::UnreachableCodeReached)),
            &evidence,
        );
        assert_eq!(verdict.status, Status::Failed);
        let error = verdict.error.unwrap();
        assert_eq!(error.code, ErrorCode::MemoryLimit);
        assert!(error.message.contains("200"), "{}", error.message);
    }

    #[test]
    fn a_completed_run_that_was_once_refused_memory_stays_completed() {
        let evidence = Evidence {
            memory_refused: Some(200),
            memory_limit: 100,
        };
        assert_eq!(
            classify(Ending::Exited(Ok(())), &evidence),
            Verdict::completed(None)
        );
    }

    #[test]
    fn script_results_and_failures() {
        let verdict = classify(Ending::Script(Ok("[1,2]".into())), &NO_EVIDENCE);
        assert_eq!(verdict, Verdict::completed(Some("[1,2]".into())));
        let failure = Failure {
            kind: FailureKind::Syntax,
            message: "SyntaxError: unexpected token".into(),
            stack: None,
            line: Some(3),
            column: Some(7),
        };
        let error = classify(Ending::Script(Err(failure)), &NO_EVIDENCE)
            .error
            .unwrap();
        assert_eq!(
            (error.code, error.line, error.column),
            (ErrorCode::CompileError, Some(3), Some(7))
        );
        let failure = Failure {
            kind: FailureKind::Runtime,
            message: "Error: boom".into(),
            stack: Some("at main (script.js:2)".into()),
            line: None,
            column: None,
        };
        let error = classify(Ending::Script(Err(failure)), &NO_EVIDENCE)
            .error
            .unwrap();
        assert_eq!(error.code, ErrorCode::ScriptError);
        assert_eq!(error.stack.as_deref(), Some("at main (script.js:2)"));
    }

    #[test]
    fn timeouts_and_cancellations_have_their_own_status() {
        let verdict = classify(Ending::TimedOut(Duration::from_millis(50)), &NO_EVIDENCE);
        assert_eq!(
            (verdict.status, verdict.error.unwrap().code),
            (Status::Timeout, ErrorCode::Timeout)
        );
        let verdict = classify(Ending::Cancelled, &NO_EVIDENCE);
        assert_eq!(
            (verdict.status, verdict.error.unwrap().code),
            (Status::Cancelled, ErrorCode::Cancelled)
        );
    }
}
