//! A throwaway PostgreSQL cluster for a test: `initdb` in a temporary
//! directory, `postgres` on 127.0.0.1 at a free port, as the `postgres` user
//! when the tests run as root (PostgreSQL refuses to run as root), stopped
//! and removed when the value is dropped. The binaries are Debian's
//! (`/usr/lib/postgresql/<version>/bin`, installed by `scripts/setup.sh`).

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection as _;

/// One cluster with one database, `kiln`'s to use.
pub struct Database {
    pub url: String,
    postgres: Child,
    _dir: tempfile::TempDir,
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

fn command(program: &Path, account: Option<(u32, u32)>, dir: &Path) -> Command {
    let mut command = Command::new(program);
    // Somewhere the account may be, whatever the test's own directory.
    command.current_dir(dir);
    if let Some((uid, gid)) = account {
        command.uid(uid).gid(gid);
    }
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Database {
    /// Starts a cluster and waits until it takes connections (at most 30 s).
    pub async fn create() -> Self {
        let bin = binaries();
        let account = run_as();
        let dir = tempfile::tempdir().unwrap();
        if let Some((uid, gid)) = account {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path().join("data");
        let made = command(&bin.join("initdb"), account, dir.path())
            .args([
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--username=kiln",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        // A port taken between its choice and the start: try another.
        for _ in 0..3 {
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("postgres.log")).unwrap();
            if let Some((uid, gid)) = account {
                std::os::unix::fs::chown(dir.path().join("postgres.log"), Some(uid), Some(gid))
                    .unwrap();
            }
            let mut postgres = command(&bin.join("postgres"), account, dir.path())
                .arg("-D")
                .arg(&data)
                .arg("-k")
                .arg(dir.path())
                .args(["-h", "127.0.0.1", "-p", &port.to_string()])
                // A test cluster: nothing here must survive a crash.
                .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
                .args(["-c", "synchronous_commit=off"])
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            let url = format!("postgres://kiln@127.0.0.1:{port}/postgres");
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if !matches!(postgres.try_wait(), Ok(None)) {
                    break;
                }
                if let Ok(conn) = sqlx::PgConnection::connect(&url).await {
                    let _ = conn.close().await;
                    return Self {
                        url,
                        postgres,
                        _dir: dir,
                    };
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = postgres.kill();
            let _ = postgres.wait();
        }
        let log = std::fs::read_to_string(dir.path().join("postgres.log")).unwrap_or_default();
        panic!("the test cluster did not start:\n{log}");
    }
}

impl Drop for Database {
    /// A fast shutdown (SIGINT: sessions end, no checkpoint to wait for),
    /// else a kill after 10 s.
    fn drop(&mut self) {
        if let Some(pid) = rustix::process::Pid::from_raw(self.postgres.id().cast_signed()) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.postgres.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.postgres.kill();
        let _ = self.postgres.wait();
    }
}
