//! `kiln compile-artifact`: the child's side of a compile. It caps its own
//! address space and CPU time first, then reads component bytes from stdin,
//! compiles them and writes the artifact into the cache directory. The exit
//! status says how it went; stderr says why it failed.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{ExitCode, ExitStatus};

use super::{CompileBounds, LoadError};

/// The hidden subcommand's name.
pub const SUBCOMMAND: &str = "compile-artifact";

/// The most of a child's stderr the parent keeps.
pub const MAX_MESSAGE_BYTES: u64 = 16 << 10;

/// The bytes do not compile (or pass a sandbox limit): stderr says why.
const REFUSED: u8 = 3;

/// Arguments of `kiln compile-artifact`.
#[derive(Debug, clap::Args)]
pub struct CompileArgs {
    /// The artifact cache to write into.
    #[arg(long)]
    pub cache_dir: PathBuf,
    /// The artifact key (64 hex digits) to write it under.
    #[arg(long)]
    pub key: String,
    /// Address space cap, MiB.
    #[arg(long)]
    pub memory_mb: u64,
    /// CPU time limit, seconds.
    #[arg(long)]
    pub cpu_secs: u64,
    /// Compile on every core (Kiln's own bytes) rather than one.
    #[arg(long)]
    pub parallel: bool,
}

/// Runs the child: exit 0 with the artifact written, 3 refused, 1 failed.
pub fn run(args: &CompileArgs) -> ExitCode {
    if let Err(e) = cap_self(args.memory_mb, args.cpu_secs) {
        eprintln!("cannot set the compile's resource limits: {e}");
        return ExitCode::FAILURE;
    }
    let mut component = Vec::new();
    if let Err(e) = std::io::stdin().lock().read_to_end(&mut component) {
        eprintln!("cannot read the component: {e}");
        return ExitCode::FAILURE;
    }
    match kiln_runtime::compile_into_cache(&args.cache_dir, &args.key, &component, args.parallel) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ (kiln_runtime::Error::Compile(_) | kiln_runtime::Error::TooComplex(_))) => {
            eprintln!("{e}");
            ExitCode::from(REFUSED)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Caps this process: its address space (an allocation past it fails, and
/// Rust aborts) and its CPU time (SIGXCPU at the soft limit, SIGKILL a
/// second later); and ends it with the server that started it.
#[cfg(target_os = "linux")]
fn cap_self(memory_mb: u64, cpu_secs: u64) -> std::io::Result<()> {
    use rustix::process::{Resource, Rlimit, Signal, setrlimit};
    // Not a check of the parent's pid after it: in a container the server
    // is often pid 1 itself.
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
    let memory = memory_mb.saturating_mul(1 << 20);
    setrlimit(
        Resource::As,
        Rlimit {
            current: Some(memory),
            maximum: Some(memory),
        },
    )?;
    setrlimit(
        Resource::Cpu,
        Rlimit {
            current: Some(cpu_secs),
            maximum: Some(cpu_secs.saturating_add(1)),
        },
    )?;
    Ok(())
}

/// Elsewhere only the parent's wall-clock deadline bounds a compile.
#[cfg(not(target_os = "linux"))]
fn cap_self(_memory_mb: u64, _cpu_secs: u64) -> std::io::Result<()> {
    Ok(())
}

/// What a child's exit means.
pub(super) fn outcome(
    status: ExitStatus,
    message: String,
    bounds: &CompileBounds,
) -> Result<(), LoadError> {
    if status.success() {
        return Ok(());
    }
    if status.code() == Some(i32::from(REFUSED)) {
        return Err(LoadError::Sandbox(message));
    }
    let memory = || LoadError::Bounds {
        limit: "limits.compile_memory_mb",
        what: format!("the compile needed more than {} MiB", bounds.memory_mb),
    };
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        match status.signal() {
            // An allocation past the address-space cap aborts.
            Some(6) if message.contains("memory allocation") => return Err(memory()),
            // SIGXCPU at the soft CPU limit, SIGKILL at the hard one (or by
            // the kernel's OOM killer).
            Some(24) => {
                return Err(LoadError::Bounds {
                    limit: "limits.compile_cpu_secs",
                    what: format!("the compile used more than {} s of CPU", bounds.cpu_secs),
                });
            }
            Some(9) => return Err(memory()),
            // Under an address-space cap, a failed stack or guard-page map
            // ends a thread this way rather than with a message.
            Some(7 | 11) => {
                return Err(LoadError::Bounds {
                    limit: "limits.compile_memory_mb",
                    what: format!(
                        "the compile crashed under its {} MiB address-space cap",
                        bounds.memory_mb
                    ),
                });
            }
            _ => {}
        }
    }
    if message.contains("Cannot allocate memory") || message.contains("out of memory") {
        return Err(memory());
    }
    Err(LoadError::Internal(format!("{status}: {message}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt as _;
    use std::time::Duration;

    fn bounds() -> CompileBounds {
        CompileBounds {
            memory_mb: 512,
            cpu_secs: 10,
            timeout: Duration::from_secs(10),
            per_caller: 2,
            parallel: 1,
            waiting: 4,
            parallel_threads: false,
        }
    }

    #[test]
    fn exits_and_signals_are_told_apart() {
        let of =
            |raw: i32, message: &str| outcome(ExitStatus::from_raw(raw), message.into(), &bounds());
        assert!(of(0, "").is_ok());
        assert!(matches!(of(3 << 8, "bad"), Err(LoadError::Sandbox(m)) if m == "bad"));
        assert!(matches!(
            of(6, "memory allocation of 4096 bytes failed"),
            Err(LoadError::Bounds {
                limit: "limits.compile_memory_mb",
                ..
            })
        ));
        assert!(matches!(
            of(24, ""),
            Err(LoadError::Bounds {
                limit: "limits.compile_cpu_secs",
                ..
            })
        ));
        assert!(matches!(
            of(11, ""),
            Err(LoadError::Bounds {
                limit: "limits.compile_memory_mb",
                ..
            })
        ));
        assert!(matches!(
            of(1 << 8, "disk full"),
            Err(LoadError::Internal(_))
        ));
    }
}
