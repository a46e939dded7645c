//! Throwaway PostgreSQL clusters for Kiln's tests (the store's unit tests
//! and the end-to-end suite on PostgreSQL): `initdb` in a directory of its
//! own, `postgres` on 127.0.0.1 at a free port, as the `postgres` account
//! when the tests run as root (PostgreSQL refuses root). The binaries are
//! Debian's (`/usr/lib/postgresql/<version>/bin`, from `scripts/setup.sh`).
//!
//! The server gets SIGINT (a fast shutdown) when the thread that started it
//! ends, the process's end included, even by SIGKILL: a test run never
//! leaves a cluster running. [`shared`] starts one per process on a thread
//! that lives as long as the process; each test takes a fresh database of
//! it ([`Cluster::database`]).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc,
    reason = "a test fixture fails loudly"
)]

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The superuser `initdb` makes.
const SUPERUSER: &str = "kiln";

/// A running cluster.
pub struct Cluster {
    bin: PathBuf,
    account: Option<(u32, u32)>,
    dir: PathBuf,
    port: u16,
    postgres: Mutex<Option<Child>>,
}

/// The newest installed PostgreSQL's binaries.
fn binaries() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL is not installed: run scripts/setup.sh")
}

/// The `postgres` account's uid and gid, when this process is root.
fn run_as() -> Option<(u32, u32)> {
    if !rustix::process::geteuid().is_root() {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    let line = passwd
        .lines()
        .find(|line| line.starts_with("postgres:"))
        .expect("no postgres account: run scripts/setup.sh");
    let fields: Vec<&str> = line.split(':').collect();
    Some((fields[2].parse().unwrap(), fields[3].parse().unwrap()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Where clusters live: one directory per test process, by its pid.
fn clusters_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("kiln-testpg");
    std::fs::create_dir_all(&dir).unwrap();
    // The postgres account must reach its cluster's directory.
    let _ = rustix::fs::chmod(&dir, rustix::fs::Mode::from_raw_mode(0o1777));
    dir
}

/// Removes the clusters of test processes that are gone (their servers
/// got SIGINT when they went).
fn remove_orphans(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let pid = entry
            .file_name()
            .to_str()
            .and_then(|name| name.split('-').next()?.parse::<i32>().ok())
            .and_then(rustix::process::Pid::from_raw);
        let gone = pid.is_some_and(|pid| rustix::process::test_kill_process(pid).is_err());
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Cluster {
    /// Makes and starts a cluster; waits until it takes connections (at
    /// most 30 s). It stops when the calling thread ends.
    pub fn start() -> Self {
        static STARTED: AtomicU64 = AtomicU64::new(0);
        let root = clusters_dir();
        remove_orphans(&root);
        let dir = root.join(format!(
            "{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let account = run_as();
        if let Some((uid, gid)) = account {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        let cluster = Self {
            bin: binaries(),
            account,
            dir,
            port: free_port(),
            postgres: Mutex::new(None),
        };
        let made = cluster
            .command("initdb")
            .args(["--auth=trust", "--no-sync", "--encoding=UTF8"])
            .arg(format!("--username={SUPERUSER}"))
            .arg("-D")
            .arg(cluster.dir.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        cluster.resume();
        cluster
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        // Somewhere the account may be, whatever the test's own directory.
        command.current_dir(&self.dir);
        if let Some((uid, gid)) = self.account {
            command.uid(uid).gid(gid);
        }
        command
    }

    /// Starts the server (again), on the same port; waits until it takes
    /// connections.
    pub fn resume(&self) {
        let log_path = self.dir.join("postgres.log");
        let log = std::fs::File::create(&log_path).unwrap();
        if let Some((uid, gid)) = self.account {
            std::os::unix::fs::chown(&log_path, Some(uid), Some(gid)).unwrap();
        }
        let mut command = self.command("postgres");
        command
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-k")
            .arg(&self.dir)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            // A test cluster: nothing here must survive a crash.
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "synchronous_commit=off", "-c", "max_connections=300"])
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // SAFETY: between fork and exec only prctl, which is
        // async-signal-safe; after the uid change, which would clear it.
        #[allow(
            unsafe_code,
            reason = "pre_exec: the death signal must be set in the child"
        )]
        unsafe {
            command.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::INT))
                    .map_err(std::io::Error::from)
            });
        }
        let mut postgres = command.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if !matches!(postgres.try_wait(), Ok(None)) {
                break;
            }
            if self.ready() {
                *self.postgres.lock().unwrap() = Some(postgres);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = postgres.kill();
        let _ = postgres.wait();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        panic!("the test cluster did not start:\n{log}");
    }

    fn ready(&self) -> bool {
        self.command("pg_isready")
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Stops the server (a fast shutdown: sessions end), waiting for it.
    pub fn pause(&self) {
        let Some(mut postgres) = self.postgres.lock().unwrap().take() else {
            return;
        };
        if let Some(pid) = rustix::process::Pid::from_raw(postgres.id().cast_signed()) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = postgres.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = postgres.kill();
        let _ = postgres.wait();
    }

    /// The URL of database `name` on this cluster.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Makes database `name` unless it exists; its URL.
    pub fn database(&self, name: &str) -> String {
        let made = self
            .command("createdb")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", SUPERUSER, name])
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let error = String::from_utf8_lossy(&made.stderr);
        assert!(
            made.status.success() || error.contains("already exists"),
            "createdb {name}: {error}"
        );
        self.url(name)
    }

    /// A new database of its own, by a name no other call gets.
    pub fn fresh_database(&self) -> String {
        static MADE: AtomicU64 = AtomicU64::new(0);
        self.database(&format!("t{}", MADE.fetch_add(1, Ordering::Relaxed)))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.pause();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The process's cluster, started on first use by a thread that lives as
/// long as the process (so the server stops only when the process does).
pub fn shared() -> &'static Cluster {
    static SHARED: OnceLock<Cluster> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (started, cluster) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("kiln-testpg".into())
            .spawn(move || {
                started.send(Cluster::start()).unwrap();
                loop {
                    std::thread::park();
                }
            })
            .unwrap();
        cluster.recv().expect("the test cluster's thread failed")
    })
}
