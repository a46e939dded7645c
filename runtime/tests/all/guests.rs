//! One test per test guest (named after it; `foreach_guest!` enforces that),
//! each asserting the Outcome the guest must produce.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_runtime::{CancelHandle, ErrorCode, Invocation, Limits, OutputKind, OutputSink, Status};

use super::{limits_with_timeout, read_guest, run, sandbox, text};

macro_rules! assert_test_exists {
    ($name:ident) => {
        #[allow(unused_imports)]
        use self::$name as _;
    };
}
kiln_components::foreach_guest!(assert_test_exists);

#[tokio::test]
async fn hello() {
    let outcome = run(
        kiln_components::HELLO,
        &["hello"],
        "Kiln",
        Limits::default(),
    )
    .await;
    assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(text(&outcome.stdout), "Hello, Kiln!\n");
    assert_eq!(text(&outcome.stderr), "greeted 4 bytes of input\n");
    assert!(outcome.error.is_none());
    assert!(outcome.fuel_consumed > 0);
    assert!(outcome.peak_memory_bytes > 0);
    assert!(!outcome.stdout_truncated && !outcome.stderr_truncated);
}

#[tokio::test]
async fn hello_without_input_greets_the_world() {
    let outcome = run(kiln_components::HELLO, &["hello"], "", Limits::default()).await;
    assert_eq!(text(&outcome.stdout), "Hello, world!\n");
}

/// The `fetch` guest's own tests are in `egress.rs`.
use super::egress::a_components_request_goes_through_the_egress_with_its_body as fetch;

#[tokio::test]
async fn endless_loop() {
    let limits = Limits {
        fuel: Some(20_000_000),
        ..Limits::default()
    };
    let outcome = run(kiln_components::ENDLESS_LOOP, &["endless_loop"], "", limits).await;
    assert_eq!(outcome.status, Status::Failed, "{outcome:?}");
    assert_eq!(outcome.error_code(), Some(ErrorCode::FuelExhausted));
    assert_eq!(outcome.fuel_consumed, 20_000_000);
    assert_eq!(outcome.exit_code, None);
}

#[tokio::test]
async fn endless_loop_without_fuel_stops_at_the_deadline() {
    let limits = limits_with_timeout(Duration::from_millis(200));
    let outcome = run(kiln_components::ENDLESS_LOOP, &["endless_loop"], "", limits).await;
    assert_eq!(outcome.status, Status::Timeout, "{outcome:?}");
    assert_eq!(outcome.error_code(), Some(ErrorCode::Timeout));
    assert!(outcome.duration >= Duration::from_millis(200));
    assert!(
        outcome.fuel_consumed > 1_000_000,
        "it did spin: {}",
        outcome.fuel_consumed
    );
}

#[tokio::test]
async fn sleeper() {
    let limits = Limits {
        timeout: Duration::from_millis(300),
        fuel: Some(50_000_000),
        ..Limits::default()
    };
    let outcome = run(kiln_components::SLEEPER, &["sleeper"], "", limits).await;
    assert_eq!(outcome.status, Status::Timeout, "{outcome:?}");
    assert_eq!(outcome.error_code(), Some(ErrorCode::Timeout));
    assert_eq!(text(&outcome.stdout), "going to sleep\n");
    assert!(outcome.duration >= Duration::from_millis(300));
    // Sleeping burns no fuel: the budget alone would never have stopped it.
    assert!(
        outcome.fuel_consumed < 5_000_000,
        "{}",
        outcome.fuel_consumed
    );
}

async fn cancel_after(
    path: &str,
    name: &str,
    after: Duration,
) -> (kiln_runtime::Outcome, Duration) {
    let (artifact, _) = sandbox().load(&read_guest(path)).unwrap();
    let cancel = CancelHandle::new();
    let remote = cancel.clone();
    let cancelled_at = Arc::new(Mutex::new(None));
    let stamp = cancelled_at.clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        *stamp.lock().unwrap() = Some(Instant::now());
        remote.cancel();
    });
    let invocation = Invocation {
        args: vec![name.into()],
        cancel: Some(cancel),
        ..Invocation::default()
    };
    let outcome = sandbox().run(&artifact, invocation).await.unwrap();
    let latency = cancelled_at
        .lock()
        .unwrap()
        .expect("cancel fired")
        .elapsed();
    (outcome, latency)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_busy_guest() {
    let (outcome, latency) = cancel_after(
        kiln_components::ENDLESS_LOOP,
        "endless_loop",
        Duration::from_millis(100),
    )
    .await;
    assert_eq!(outcome.status, Status::Cancelled, "{outcome:?}");
    assert_eq!(outcome.error_code(), Some(ErrorCode::Cancelled));
    // The bound here is loose on purpose; benches/ measures the real latency.
    assert!(latency < Duration::from_secs(2), "{latency:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_sleeping_guest() {
    let (outcome, _) = cancel_after(
        kiln_components::SLEEPER,
        "sleeper",
        Duration::from_millis(100),
    )
    .await;
    assert_eq!(outcome.status, Status::Cancelled, "{outcome:?}");
    assert_eq!(text(&outcome.stdout), "going to sleep\n");
}

#[tokio::test]
async fn a_handle_cancelled_before_the_run_stops_it_at_once() {
    let (artifact, _) = sandbox().load(&read_guest(kiln_components::HELLO)).unwrap();
    let cancel = CancelHandle::new();
    cancel.cancel();
    let invocation = Invocation {
        cancel: Some(cancel),
        ..Invocation::default()
    };
    let outcome = sandbox().run(&artifact, invocation).await.unwrap();
    assert_eq!(outcome.status, Status::Cancelled);
}

#[tokio::test]
async fn memory_bomb() {
    let limits = Limits {
        memory_bytes: 32 << 20,
        ..Limits::default()
    };
    let outcome = run(kiln_components::MEMORY_BOMB, &["memory_bomb"], "", limits).await;
    assert_eq!(outcome.status, Status::Failed, "{outcome:?}");
    assert_eq!(outcome.error_code(), Some(ErrorCode::MemoryLimit));
    assert!(
        outcome.peak_memory_bytes <= 32 << 20,
        "{}",
        outcome.peak_memory_bytes
    );
    assert!(
        outcome.peak_memory_bytes > 16 << 20,
        "{}",
        outcome.peak_memory_bytes
    );
}

#[tokio::test]
async fn huge_memory() {
    let limits = Limits {
        memory_bytes: 64 << 20,
        ..Limits::default()
    };
    let outcome = run(kiln_components::HUGE_MEMORY, &["huge_memory"], "", limits).await;
    assert_eq!(outcome.status, Status::Failed, "{outcome:?}");
    assert_eq!(outcome.error_code(), Some(ErrorCode::MemoryLimit));
    assert!(outcome.stdout.is_empty(), "it must not have started");
}

#[tokio::test]
async fn huge_memory_runs_when_the_cap_allows_it() {
    let limits = Limits {
        memory_bytes: 512 << 20,
        ..Limits::default()
    };
    let outcome = run(kiln_components::HUGE_MEMORY, &["huge_memory"], "", limits).await;
    assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
    assert_eq!(
        text(&outcome.stdout),
        format!("touched {} bytes\n", 256 << 20)
    );
    assert!(outcome.peak_memory_bytes >= 256 << 20);
}

#[tokio::test]
async fn deep_recursion() {
    let outcome = run(
        kiln_components::DEEP_RECURSION,
        &["deep_recursion"],
        "",
        Limits::default(),
    )
    .await;
    assert_eq!(outcome.status, Status::Failed, "{outcome:?}");
    assert_eq!(outcome.error_code(), Some(ErrorCode::Trap));
    let message = &outcome.error.as_ref().unwrap().message;
    assert!(message.contains("trap"), "{message}");
}

#[tokio::test]
async fn output_flood() {
    let streamed = Arc::new(Mutex::new((0usize, 0usize)));
    let counter = streamed.clone();
    let sink: OutputSink = Arc::new(move |kind, bytes| {
        let mut counts = counter.lock().unwrap();
        match kind {
            OutputKind::Stdout => counts.0 += bytes.len(),
            OutputKind::Stderr => counts.1 += bytes.len(),
        }
    });
    let (artifact, _) = sandbox()
        .load(&read_guest(kiln_components::OUTPUT_FLOOD))
        .unwrap();
    let limits = Limits {
        stdout_bytes: 1 << 20,
        stderr_bytes: 64 << 10,
        ..Limits::default()
    };
    let invocation = Invocation {
        limits,
        on_output: Some(sink),
        ..Invocation::default()
    };
    let outcome = sandbox().run(&artifact, invocation).await.unwrap();
    // The guest is not stopped by the cap: it runs to its own end.
    assert_eq!(outcome.status, Status::Completed, "{:?}", outcome.error);
    assert_eq!(outcome.stdout.len(), 1 << 20);
    assert_eq!(outcome.stderr.len(), 64 << 10);
    assert!(outcome.stdout_truncated && outcome.stderr_truncated);
    assert_eq!(*streamed.lock().unwrap(), (1 << 20, 64 << 10));
}

#[tokio::test]
async fn exit_code() {
    let outcome = run(
        kiln_components::EXIT_CODE,
        &["exit_code", "42"],
        "",
        Limits::default(),
    )
    .await;
    assert_eq!(outcome.status, Status::Failed, "{outcome:?}");
    assert_eq!(outcome.exit_code, Some(42));
    assert_eq!(outcome.error_code(), Some(ErrorCode::ExitCode));
    assert_eq!(text(&outcome.stdout), "exiting with 42\n");
}

#[tokio::test]
async fn exit_code_zero_is_success() {
    let outcome = run(
        kiln_components::EXIT_CODE,
        &["exit_code", "0"],
        "",
        Limits::default(),
    )
    .await;
    assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
    assert_eq!(outcome.exit_code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snoop() {
    // A listener the guest is told about: if it could reach the host's
    // network, a connection would arrive here.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    // SAFETY-free way to put a secret into the host environment: the test
    // process already has PATH and HOME; neither may appear in the guest.
    assert!(std::env::var_os("PATH").is_some());

    let (artifact, _) = sandbox().load(&read_guest(kiln_components::SNOOP)).unwrap();
    let invocation = Invocation {
        args: vec!["snoop".into(), port.clone()],
        env: vec![("KILN_EXECUTION_ID".into(), "exec-1".into())],
        ..Invocation::default()
    };
    let outcome = sandbox().run(&artifact, invocation).await.unwrap();
    assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
    let report = text(&outcome.stdout);
    let env: Vec<&str> = report.lines().filter(|l| l.starts_with("env ")).collect();
    assert_eq!(env, ["env KILN_EXECUTION_ID=exec-1"], "{report}");
    assert!(report.contains("args 2"), "{report}");
    for line in report
        .lines()
        .filter(|l| !l.starts_with("env ") && !l.starts_with("args "))
    {
        assert!(
            !line.contains("OPEN"),
            "the guest got through: {line}\n{report}"
        );
    }
    for probe in [
        "dir /etc/passwd",
        "file /etc/passwd",
        "file /proc/self/environ",
        "dir /",
        "write",
        "dns",
    ] {
        assert!(
            report.contains(&format!("{probe} denied")),
            "{probe} missing:\n{report}"
        );
    }
    assert!(
        report.contains(&format!("tcp 127.0.0.1:{port} denied")),
        "{report}"
    );
    assert!(
        listener.accept().is_err(),
        "the guest connected to the host"
    );
    assert!(!std::path::Path::new("kiln-snoop-was-here").exists());
}

#[tokio::test]
async fn fib() {
    let outcome = run(kiln_components::FIB, &["fib", "20"], "", Limits::default()).await;
    assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
    assert_eq!(text(&outcome.stdout), "6765\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_do_not_mix_their_io() {
    let (artifact, _) = sandbox().load(&read_guest(kiln_components::HELLO)).unwrap();
    let runs = (0..16).map(|i| {
        let artifact = artifact.clone();
        tokio::spawn(async move {
            let invocation = Invocation {
                stdin: format!("guest {i}").into_bytes(),
                ..Invocation::default()
            };
            (i, sandbox().run(&artifact, invocation).await.unwrap())
        })
    });
    for run in runs {
        let (i, outcome) = run.await.unwrap();
        assert_eq!(text(&outcome.stdout), format!("Hello, guest {i}!\n"));
    }
}

/// Live stdin: each line is answered before the next is sent (the guest
/// blocks reading meanwhile), the bytes given up front come first, and the
/// run ends when the sender is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_lines() {
    let artifact = sandbox()
        .load(&read_guest(kiln_components::ECHO_LINES))
        .unwrap()
        .0;
    let (sender, chunks) = tokio::sync::mpsc::channel(1);
    let (seen, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let on_output: OutputSink = Arc::new(move |kind, bytes: &[u8]| {
        if kind == OutputKind::Stdout {
            let _ = seen.send(String::from_utf8_lossy(bytes).into_owned());
        }
    });
    let invocation = Invocation {
        args: vec!["echo_lines".into()],
        stdin: b"first\n".to_vec(),
        live_stdin: Some(chunks),
        on_output: Some(on_output),
        ..Invocation::default()
    };
    let run = tokio::spawn(async move { sandbox().run(&artifact, invocation).await });
    assert_eq!(lines.recv().await.unwrap(), "echo: first\n");
    sender.send("sec".into()).await.unwrap();
    sender.send("ond\nthird\n".into()).await.unwrap();
    assert_eq!(lines.recv().await.unwrap(), "echo: second\n");
    assert_eq!(lines.recv().await.unwrap(), "echo: third\n");
    assert!(!run.is_finished(), "the guest waits for more input");
    drop(sender);
    let outcome = run.await.unwrap().unwrap();
    assert_eq!(outcome.status, Status::Completed, "{outcome:?}");
    assert_eq!(
        text(&outcome.stdout),
        "echo: first\necho: second\necho: third\nread 3 lines\n"
    );
}

/// A guest waiting on live stdin that never comes is still held to its
/// deadline.
#[tokio::test]
async fn a_guest_waiting_for_live_stdin_times_out() {
    let artifact = sandbox()
        .load(&read_guest(kiln_components::ECHO_LINES))
        .unwrap()
        .0;
    let (_sender, chunks) = tokio::sync::mpsc::channel(1);
    let invocation = Invocation {
        args: vec!["echo_lines".into()],
        live_stdin: Some(chunks),
        limits: limits_with_timeout(Duration::from_millis(300)),
        ..Invocation::default()
    };
    let outcome = sandbox().run(&artifact, invocation).await.unwrap();
    assert_eq!(outcome.status, Status::Timeout, "{outcome:?}");
}
