//! The artifact cache: compile once, reuse from disk after a restart and from
//! memory after that; never trust a damaged file; refuse what cannot run.

use kiln_runtime::{Error, ErrorCode, Invocation, LoadSource, Sandbox, Status};

use super::{private_sandbox, read_guest, sandbox, script, small_engine};

#[test]
fn a_second_sandbox_loads_from_disk_without_compiling() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = read_guest(kiln_components::HELLO);

    let first = Sandbox::new(small_engine(Some(dir.path().into()))).unwrap();
    let (_, source) = first.load(&bytes).unwrap();
    assert_eq!(source, LoadSource::Compiled);
    let (_, source) = first.load(&bytes).unwrap();
    assert_eq!(source, LoadSource::Memory);
    assert_eq!(first.cache_stats().compiles, 1);
    drop(first);

    let second = Sandbox::new(small_engine(Some(dir.path().into()))).unwrap();
    let (_, source) = second.load(&bytes).unwrap();
    assert_eq!(source, LoadSource::Disk);
    let stats = second.cache_stats();
    assert_eq!((stats.compiles, stats.disk_hits), (0, 1));
}

#[test]
fn concurrent_first_loads_of_the_same_bytes_share_one_cache_dir() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = read_guest(kiln_components::HELLO);
    let sandboxes: Vec<_> = (0..6)
        .map(|_| Sandbox::new(small_engine(Some(dir.path().into()))).unwrap())
        .collect();
    // Each compiles and writes the same cache files at about the same time.
    std::thread::scope(|scope| {
        for sandbox in &sandboxes {
            scope.spawn(|| sandbox.load(&bytes).unwrap());
        }
    });
    let after = Sandbox::new(small_engine(Some(dir.path().into()))).unwrap();
    assert_eq!(after.load(&bytes).unwrap().1, LoadSource::Disk);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_corrupted_cache_file_is_recompiled_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = read_guest(kiln_components::HELLO);
    let first = Sandbox::new(small_engine(Some(dir.path().into()))).unwrap();
    let (artifact, _) = first.load(&bytes).unwrap();
    let code = dir.path().join(format!("{}.cwasm", artifact.key()));
    drop(first);

    let mut damaged = std::fs::read(&code).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    std::fs::write(&code, damaged).unwrap();

    let second = Sandbox::new(small_engine(Some(dir.path().into()))).unwrap();
    let (artifact, source) = second.load(&bytes).unwrap();
    assert_eq!(source, LoadSource::Compiled);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let outcome = rt
        .block_on(second.run(
            &artifact,
            Invocation {
                stdin: b"again".to_vec(),
                ..Invocation::default()
            },
        ))
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&outcome.stdout), "Hello, again!\n");
}

#[test]
fn garbage_is_refused_as_invalid() {
    let err = sandbox()
        .load(&[0x7f, b'E', b'L', b'F', 0xff, 0x00])
        .unwrap_err();
    assert!(matches!(err, Error::InvalidComponent(_)), "{err}");
    let err = sandbox().load(b"this is not wasm").unwrap_err();
    assert!(matches!(err, Error::Compile(_)), "{err}");
}

#[test]
fn truncated_wasm_is_a_compile_error() {
    let bytes = read_guest(kiln_components::HELLO);
    let err = sandbox().load(&bytes[..bytes.len() / 2]).unwrap_err();
    assert!(matches!(err, Error::Compile(_)), "{err}");
}

#[test]
fn a_component_that_imports_what_kiln_lacks_is_a_link_error() {
    let component = wat::parse_str(
        r#"(component
            (import "kiln:nowhere/thing" (instance (export "f" (func))))
        )"#,
    )
    .unwrap();
    let err = sandbox().load(&component).unwrap_err();
    assert!(matches!(err, Error::Link(_)), "{err}");
}

#[tokio::test]
async fn a_core_wasip1_module_runs_through_the_adapter() {
    let module = wat::parse_str(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write"
                (func $fd_write (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (data (i32.const 16) "from wasip1\n")
            (func (export "_start")
                (i32.store (i32.const 0) (i32.const 16))
                (i32.store (i32.const 4) (i32.const 12))
                (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
                (call $exit (i32.const 3))))"#,
    )
    .unwrap();
    let (artifact, _) = sandbox().load(&module).unwrap();
    let outcome = sandbox()
        .run(&artifact, Invocation::default())
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&outcome.stdout), "from wasip1\n");
    assert_eq!(outcome.status, Status::Failed);
    // The preview1 adapter maps every non-zero proc_exit status to 1.
    assert_eq!(outcome.exit_code, Some(1));
    assert_eq!(outcome.error_code(), Some(ErrorCode::ExitCode));
}

/// The parameters of the script-cache runs.
const NAME_A: &str = r#"{"name": "a"}"#;

#[tokio::test]
async fn a_script_is_compiled_once_then_runs_from_its_cached_code() {
    let (sandbox, js) = private_sandbox(&kiln_components::JS_RUNTIME.decompress().unwrap());
    // Each run starts from a fresh instance: the top level runs again, so
    // `runs` is 1 every time even though the parse happened once.
    let source =
        "let runs = 0;\nfunction main(p) { runs += 1; console.log('hi ' + p.name); return runs; }";
    for cached_runs in 0..3 {
        let outcome = sandbox.run(&js, script(source, NAME_A)).await.unwrap();
        assert_eq!(outcome.result.as_deref(), Some("1"), "{outcome:?}");
        assert_eq!(outcome.stdout, b"hi a\n");
        let stats = sandbox.cache_stats();
        assert_eq!(
            (stats.script_compiles, stats.script_code_hits),
            (1, cached_runs)
        );
    }

    // A module is cached the same way.
    let module = "export default async function (p) { return `module ${p.name}`; }";
    let before = sandbox.cache_stats();
    for _ in 0..2 {
        let outcome = sandbox.run(&js, script(module, NAME_A)).await.unwrap();
        assert_eq!(
            outcome.result.as_deref(),
            Some(r#""module a""#),
            "{outcome:?}"
        );
    }
    let after = sandbox.cache_stats();
    assert_eq!(after.script_compiles, before.script_compiles + 1);
    assert_eq!(after.script_code_hits, before.script_code_hits + 1);

    // Checking a script at upload compiles it; its first run is then warm.
    let checked = "function main() { return 'checked'; }";
    let limits = kiln_runtime::Limits::default();
    assert!(
        sandbox
            .check(&js, &checked.into(), limits)
            .await
            .unwrap()
            .is_none()
    );
    let before = sandbox.cache_stats();
    let outcome = sandbox.run(&js, script(checked, NAME_A)).await.unwrap();
    assert_eq!(outcome.result.as_deref(), Some(r#""checked""#));
    let after = sandbox.cache_stats();
    assert_eq!(after.script_compiles, before.script_compiles);
    assert_eq!(after.script_code_hits, before.script_code_hits + 1);

    // A syntax error is reported on every run and nothing is cached for it.
    let broken = "function main( {";
    for _ in 0..2 {
        let outcome = sandbox.run(&js, script(broken, NAME_A)).await.unwrap();
        assert_eq!(outcome.status, Status::Failed);
        assert_eq!(outcome.error.unwrap().code, ErrorCode::CompileError);
    }
    assert_eq!(sandbox.cache_stats().script_compiles, after.script_compiles);
}

#[test]
fn a_trim_of_the_disk_never_removes_a_loaded_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = read_guest(kiln_components::HELLO);
    let loaded = Sandbox::new(small_engine(Some(dir.path().into()))).unwrap();
    let (artifact, _) = loaded.load(&bytes).unwrap();
    let code = dir.path().join(format!("{}.cwasm", artifact.key()));
    let unused = dir.path().join("unused.cwasm");
    std::fs::write(&unused, [0u8; 1000]).unwrap();

    // A budget of nothing: all that may go goes, the loaded one stays.
    let trimmed = loaded.trim_disk_cache(0).unwrap();
    assert_eq!((trimmed.files, trimmed.bytes), (1, 1000));
    assert!(code.exists() && !unused.exists());
    assert_eq!(trimmed.kept_bytes, std::fs::metadata(&code).unwrap().len());

    // A sandbox that has not loaded it may remove it.
    let other = Sandbox::new(small_engine(Some(dir.path().into()))).unwrap();
    assert_eq!(other.trim_disk_cache(0).unwrap().files, 1);
    assert!(!code.exists());
}
