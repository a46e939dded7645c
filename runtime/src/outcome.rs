//! What became of a run. Guest misbehaviour is recorded here, never returned as
//! an `Err`: the host stores and reports it like any other result.

use std::time::Duration;

use wasmtime::Trap;
use wasmtime_wasi::I32Exit;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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
}

/// A failure's code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GuestError {
    /// Machine-readable reason.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

/// Everything a run produced and consumed.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Final status.
    pub status: Status,
    /// The guest's exit status when it exited (0 for a normal return), `None`
    /// when it trapped or was stopped.
    pub exit_code: Option<i32>,
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
    Returned(wasmtime::Result<Result<(), ()>>),
    TimedOut(Duration),
    Cancelled,
}

/// Facts from the store that name a failure more precisely than the trap.
pub(crate) struct Evidence {
    /// Total memory the guest asked for when the cap refused it.
    pub memory_refused: Option<u64>,
    pub memory_limit: u64,
}

/// Turns an ending into status, exit code and error.
pub(crate) fn classify(
    ending: Ending,
    evidence: &Evidence,
) -> (Status, Option<i32>, Option<GuestError>) {
    let fail = |code, message: String| (Status::Failed, GuestError { code, message });
    let (status, exit_code, error) = match ending {
        Ending::Returned(Ok(Ok(()))) => return (Status::Completed, Some(0), None),
        Ending::Returned(Ok(Err(()))) => {
            let (s, e) = fail(ErrorCode::ExitCode, "the guest exited with status 1".into());
            (s, Some(1), Some(e))
        }
        Ending::Returned(Err(err)) => {
            if let Some(exit) = err.downcast_ref::<I32Exit>() {
                if exit.0 == 0 {
                    return (Status::Completed, Some(0), None);
                }
                let (s, e) = fail(
                    ErrorCode::ExitCode,
                    format!("the guest exited with status {}", exit.0),
                );
                (s, Some(exit.0), Some(e))
            } else if let Some(Trap::OutOfFuel) = err.downcast_ref::<Trap>() {
                let (s, e) = fail(
                    ErrorCode::FuelExhausted,
                    "the guest used its whole fuel budget".into(),
                );
                (s, None, Some(e))
            } else {
                let (s, e) = fail(ErrorCode::Trap, trap_message(&err));
                (s, None, Some(e))
            }
        }
        Ending::TimedOut(after) => (
            Status::Timeout,
            None,
            Some(GuestError {
                code: ErrorCode::Timeout,
                message: format!("the guest was still running after {} ms", after.as_millis()),
            }),
        ),
        Ending::Cancelled => (
            Status::Cancelled,
            None,
            Some(GuestError {
                code: ErrorCode::Cancelled,
                message: "the run was cancelled".into(),
            }),
        ),
    };
    // A guest refused memory usually fails some other way afterwards (an abort
    // in its allocator, an exit code): name the cause, not the symptom.
    match (status, evidence.memory_refused) {
        (Status::Failed, Some(wanted)) => (
            Status::Failed,
            exit_code,
            Some(GuestError {
                code: ErrorCode::MemoryLimit,
                message: format!(
                    "the guest asked for {wanted} bytes of memory; the limit is {} bytes",
                    evidence.memory_limit
                ),
            }),
        ),
        _ => (status, exit_code, error),
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

    #[test]
    fn exit_zero_is_completion() {
        let err = wasmtime::Error::new(I32Exit(0));
        let (status, code, error) = classify(Ending::Returned(Err(err)), &NO_EVIDENCE);
        assert_eq!((status, code, error), (Status::Completed, Some(0), None));
    }

    #[test]
    fn non_zero_exit_keeps_its_code() {
        let err = wasmtime::Error::new(I32Exit(42));
        let (status, code, error) = classify(Ending::Returned(Err(err)), &NO_EVIDENCE);
        assert_eq!((status, code), (Status::Failed, Some(42)));
        assert_eq!(error.unwrap().code, ErrorCode::ExitCode);
    }

    #[test]
    fn out_of_fuel_is_named() {
        let err = wasmtime::Error::new(Trap::OutOfFuel);
        let (_, _, error) = classify(Ending::Returned(Err(err)), &NO_EVIDENCE);
        assert_eq!(error.unwrap().code, ErrorCode::FuelExhausted);
    }

    #[test]
    fn a_failure_after_a_refused_grow_is_a_memory_limit() {
        let err = wasmtime::Error::new(Trap::UnreachableCodeReached);
        let evidence = Evidence {
            memory_refused: Some(200),
            memory_limit: 100,
        };
        let (status, _, error) = classify(Ending::Returned(Err(err)), &evidence);
        assert_eq!(status, Status::Failed);
        let error = error.unwrap();
        assert_eq!(error.code, ErrorCode::MemoryLimit);
        assert!(error.message.contains("200"), "{}", error.message);
    }

    #[test]
    fn a_completed_run_that_was_once_refused_memory_stays_completed() {
        let evidence = Evidence {
            memory_refused: Some(200),
            memory_limit: 100,
        };
        let (status, _, error) = classify(Ending::Returned(Ok(Ok(()))), &evidence);
        assert_eq!((status, error), (Status::Completed, None));
    }

    #[test]
    fn timeouts_and_cancellations_have_their_own_status() {
        let (status, _, error) =
            classify(Ending::TimedOut(Duration::from_millis(50)), &NO_EVIDENCE);
        assert_eq!(
            (status, error.unwrap().code),
            (Status::Timeout, ErrorCode::Timeout)
        );
        let (status, _, error) = classify(Ending::Cancelled, &NO_EVIDENCE);
        assert_eq!(
            (status, error.unwrap().code),
            (Status::Cancelled, ErrorCode::Cancelled)
        );
    }
}
