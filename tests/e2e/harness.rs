//! Spawns `kiln serve` on an ephemeral port, reads the address from its
//! "Kiln listening on" line, logs in as the first admin, and kills it on
//! drop. `get`/`post`/`request` carry the admin's access token; `anonymous`
//! and `with_token` are for the tests of authentication itself.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::{Value, json};

pub struct Kiln {
    child: Child,
    pub base: String,
    /// What the server printed on stdout after its "Kiln listening" line.
    printed: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    client: Client,
    /// The first admin's access token.
    pub token: String,
}

/// The first admin's password in every test server.
pub const ADMIN_PASSWORD: &str = "e2e admin password";

/// Compiled runtimes, shared by every server and `kiln run` of this suite
/// and by the in-process suite (`api/suite`, the same directory), which
/// `cargo test` runs first: the JavaScript and Python runtimes are compiled
/// once per checkout, not once per test binary. Not `CARGO_TARGET_TMPDIR`:
/// that depends on `--target`, and the unit tests do not get it.
/// The Python with the tools the tests check against: scripts/setup.sh's
/// virtual environment, else whatever `python3` is on the path.
pub(crate) fn python() -> PathBuf {
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/python-tools/bin/python3");
    if tools.exists() {
        tools
    } else {
        PathBuf::from("python3")
    }
}

/// A command setup.sh installed beside that Python (`st`,
/// `openapi-python-client`), with the `PATH` it runs under.
pub(crate) fn python_tool(name: &str) -> (PathBuf, PathBuf) {
    let tools = python().parent().map(Path::to_path_buf).unwrap_or_default();
    let tool = tools.join(name);
    assert!(
        tool.exists(),
        "{} is missing: run scripts/setup.sh",
        tool.display()
    );
    (tool, tools)
}

/// Held by the tests that compile both language runtimes from an empty
/// cache (both cores for a minute) and by those whose assertions are about
/// timing under a steady load, so the two kinds never share the machine.
pub(crate) fn machine_to_myself() -> std::sync::MutexGuard<'static, ()> {
    static MACHINE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    MACHINE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The store the suite's servers keep their records in: the test binary's
/// root says which (`main.rs`: sled; `on_postgres.rs`: PostgreSQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Sled,
    Postgres,
}

/// The database of the servers started on data directory `data` (a restart
/// on the same directory finds its records again), on the test process's
/// throwaway cluster.
fn database_of(data: &Path) -> String {
    // FNV-1a of the path: a name PostgreSQL takes (at most 63 bytes).
    let hash = data
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    kiln_testpg::shared().database(&format!("e2e_{hash:016x}"))
}

/// `kiln` with `args`, its compiled runtimes in `cache`.
pub(crate) fn kiln(args: &[&str], cache: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .env_remove("KILN_LOG")
        .output()
        .unwrap()
}

/// A command's stdout, as JSON.
pub(crate) fn json(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stdout)))
}

pub(crate) fn shared_cache() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp/kiln-e2e-cache")
}

impl Kiln {
    pub fn start(env: &[(&str, &str)]) -> (Self, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let kiln = Self::start_in(dir.path(), env);
        (kiln, dir)
    }

    pub fn start_in(data: &Path, env: &[(&str, &str)]) -> Self {
        Self::launch(data, env, Stdio::inherit()).logged_in()
    }

    /// Starts a server whose log (stderr) goes to `log`.
    pub fn start_logging_to(data: &Path, env: &[(&str, &str)], log: std::fs::File) -> Self {
        Self::launch(data, env, Stdio::from(log)).logged_in()
    }

    /// Starts a server without logging in. An env value of "" removes the
    /// variable.
    pub fn launch(data: &Path, env: &[(&str, &str)], stderr: Stdio) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .env("KILN_SERVER_CACHE_DIR", shared_cache())
            .env("KILN_ADMIN_PASSWORD", ADMIN_PASSWORD)
            // Off unless a test turns them on: most tests are not about them.
            .env("KILN_RATE_LIMIT_READ_PER_MINUTE", "0")
            .env("KILN_RATE_LIMIT_WRITE_PER_MINUTE", "0")
            .env("KILN_RATE_LIMIT_EXECUTE_PER_MINUTE", "0")
            .env("KILN_RATE_LIMIT_LOGIN_PER_MINUTE", "0")
            .env("KILN_RATE_LIMIT_LOGIN_GLOBAL_PER_MINUTE", "0")
            .env("KILN_RATE_LIMIT_FAILED_AUTH_PER_MINUTE", "0")
            // Stopping servers at once, unless a test is about draining.
            .env("KILN_SERVER_DRAIN_DELAY_MS", "0")
            .env_remove("KILN_LOG")
            .stdout(Stdio::piped())
            .stderr(stderr);
        if crate::STORE == Store::Postgres {
            command.env("KILN_STORE_URL", database_of(data));
        }
        for (key, value) in env {
            if value.is_empty() {
                command.env_remove(key);
            } else {
                command.env(key, value);
            }
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        // The rest is kept (the first 1 000 lines, 4 KiB of each) for the
        // tests of the start-up's messages; it ends with the server.
        let printed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        std::thread::spawn({
            let printed = printed.clone();
            move || {
                for mut line in stdout.lines().map_while(Result::ok) {
                    let mut printed = printed.lock().unwrap();
                    if printed.len() < 1_000 {
                        line.truncate(line.floor_char_boundary(4096));
                        printed.push(line);
                    }
                }
            }
        });
        let address = line
            .trim()
            .strip_prefix("Kiln listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_string();
        let client = Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        Self {
            child,
            base: address,
            printed,
            client,
            token: String::new(),
        }
    }

    /// The lines the server printed on stdout after "Kiln listening on".
    pub fn printed(&self) -> Vec<String> {
        self.printed.lock().unwrap().clone()
    }

    /// Waits until `/readyz` answers 200 (the language runtimes loaded).
    pub fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        loop {
            let ready = self.anonymous(reqwest::Method::GET, "/readyz").send();
            if ready.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server was not ready in 300 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn logged_in(mut self) -> Self {
        self.wait_ready();
        let login = self.login("admin", ADMIN_PASSWORD);
        assert_eq!(login.status(), 200, "the admin cannot log in");
        self.token = login.json::<Value>().unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        self
    }

    /// `POST /v1/auth/login`.
    pub fn login(&self, username: &str, password: &str) -> Response {
        self.anonymous(reqwest::Method::POST, "/v1/auth/login")
            .json(&json!({"username": username, "password": password}))
            .send()
            .unwrap()
    }

    /// A request with no credential.
    pub fn anonymous(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.base))
    }

    /// A request with `Authorization: Bearer <token>`.
    pub fn with_token(&self, token: &str, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.anonymous(method, path).bearer_auth(token)
    }

    /// A request with `X-API-Key: <key>`.
    pub fn with_key(&self, key: &str, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.anonymous(method, path).header("x-api-key", key)
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(reqwest::Method::GET, path)
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(reqwest::Method::POST, path)
    }

    /// A request as the first admin.
    pub fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.with_token(&self.token, method, path)
    }

    /// Creates a user with `role` (password: "<username> password") and
    /// returns its id and an access token of theirs.
    pub fn create_user(&self, username: &str, role: &str) -> (String, String) {
        let password = format!("{username} password");
        let response = self
            .post("/v1/users")
            .json(&json!({"username": username, "password": password, "role": role}))
            .send()
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().unwrap());
        let id = response.json::<Value>().unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let login = self.login(username, &password);
        assert_eq!(login.status(), 200);
        let token = login.json::<Value>().unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        (id, token)
    }

    /// Creates an API key with `scopes` for the user whose access token is
    /// `token`, asserting 201, and returns the key.
    pub fn api_key(&self, token: &str, name: &str, scopes: &[&str]) -> String {
        let response = self
            .with_token(token, reqwest::Method::POST, "/v1/api-keys")
            .json(&json!({"name": name, "scopes": scopes}))
            .send()
            .unwrap();
        assert_eq!(response.status(), 201);
        response.json::<Value>().unwrap()["key"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Creates a script and returns its JSON, asserting 201.
    pub fn create_script(&self, name: &str, language: &str, content: &str) -> Value {
        self.create(json!({"name": name, "language": language, "content": content}))
    }

    /// Uploads a test guest component as `name` (base64 in JSON) and returns
    /// the script's JSON, asserting 201.
    pub fn create_component(&self, name: &str, path: &str) -> Value {
        use base64::Engine as _;
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap());
        self.create(json!({"name": name, "language": "wasm", "content_base64": encoded}))
    }

    fn create(&self, body: Value) -> Value {
        let response = self.post("/v1/scripts").json(&body).send().unwrap();
        assert_eq!(
            response.status(),
            201,
            "{}",
            response.text().unwrap_or_default()
        );
        response.json().unwrap()
    }

    /// `POST /v1/scripts/{script}/execute{query}` with a JSON body.
    pub fn execute(&self, script: &str, query: &str, body: Value) -> Response {
        self.execute_request(script, query)
            .json(&body)
            .send()
            .unwrap()
    }

    /// `POST /v1/scripts/{script}/execute{query}`, to be sent (from
    /// another thread, say).
    pub fn execute_request(&self, script: &str, query: &str) -> RequestBuilder {
        self.post(&format!("/v1/scripts/{script}/execute{query}"))
    }

    /// Runs a script with `?wait=true` and returns the finished execution.
    pub fn run(&self, script: &str, body: Value) -> Value {
        let response = self.execute(script, "?wait=true", body);
        assert_eq!(response.status(), 200);
        response.json().unwrap()
    }

    /// `GET /v1/executions/{id}`'s body.
    pub fn execution(&self, id: &str) -> Value {
        self.get(&format!("/v1/executions/{id}"))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// Polls an execution until it is final and returns it.
    pub fn poll_until_final(&self, id: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let execution = self.execution(id);
            if !matches!(execution["status"].as_str(), Some("queued" | "running")) {
                return execution;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "never finished: {execution}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        self.child.wait().unwrap()
    }

    /// Waits until an execution reaches `status`.
    pub fn wait_for_status(&self, id: &str, status: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.execution(id)["status"] != status {
            assert!(
                std::time::Instant::now() < deadline,
                "never reached {status}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory now, from `/proc`.
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes_of(self.pid())
    }

    /// Kills the server at once, as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Kiln {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JSON body of an error response, checked against the contract's shape.
pub fn error_body(response: Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status);
    let request_id = response
        .headers()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let content_type = response
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: Value = response.json().unwrap();
    let error = &body["error"];
    assert_eq!(error["code"], code, "{body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(error["request_id"], request_id.as_str());
    assert!(error["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(error["details"].is_array());
    body
}

/// A process's resident memory, from `/proc` (0 once it is gone).
pub fn rss_bytes_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.trim().strip_suffix("kB"))
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// The value of one sample line of `/metrics`, by its exact name and labels.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// Runs `command` to its end, killed if it takes longer than `limit`.
pub fn output_within(command: &mut Command, limit: Duration) -> std::process::Output {
    use std::os::unix::process::CommandExt as _;
    // A group of its own, so a run past its time is killed with everything
    // it started (node's test processes, a browser).
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap();
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(limit) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status();
            panic!("{command:?} still ran after {limit:?}");
        }
    }
}

/// Polls `check` until it returns a value; fails after 10 s. For what the
/// server records a moment after a test could first look.
pub fn eventually<T>(what: &str, check: impl Fn() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "never {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
