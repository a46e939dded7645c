//! The API driven in process: [`TestApp`] is a whole node (`serve::assemble`
//! over a temporary data directory) whose router is called with
//! `tower::ServiceExt::oneshot`, no socket and no child process. The
//! validation, access, pagination, ETag and error-shape rules are tested
//! here; `tests/e2e` keeps what needs a real process (signals, kill -9,
//! sockets, the scheduler's clock, webhook deliveries).

mod access;
mod account;
mod answers;
mod auth;
mod durability;
mod executions;
mod http;
mod limits;
mod openapi;
mod orgs;
mod ownership;
mod quotas;
mod schedules;
mod scripts;
mod versions;

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::config::{Config, Secret};

/// The first admin's password in every test app.
pub const ADMIN_PASSWORD: &str = "in-process admin password";

/// One node and its router, with the first admin logged in.
pub struct TestApp {
    router: axum::Router,
    /// The first admin's access token.
    pub token: String,
    /// The operations this app answered (`METHOD /template`), each answer
    /// held to the document (`answers.rs`).
    pub answered: std::sync::Mutex<std::collections::BTreeSet<String>>,
    _data: tempfile::TempDir,
}

/// Compiled runtimes, shared with every test app, end-to-end server and
/// `kiln run` of this and later runs (`tests/e2e/harness.rs` names the same
/// directory): a fresh cache would compile the JavaScript runtime again for
/// each test, and each test binary would compile both runtimes again.
fn shared_cache() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tmp/kiln-e2e-cache")
}

impl TestApp {
    /// A node on the defaults, rate limits off (most tests are not about them).
    pub async fn new() -> Self {
        Self::with(|_| {}).await
    }

    /// A node whose configuration `configure` changes first.
    pub async fn with(configure: impl FnOnce(&mut Config)) -> Self {
        Self::syncing_with(std::sync::Arc::new(crate::store::Fsync), configure).await
    }

    /// A node on the defaults whose store's files `syncer` makes durable.
    pub async fn syncing_with(
        syncer: std::sync::Arc<dyn crate::store::FileSyncer>,
        configure: impl FnOnce(&mut Config),
    ) -> Self {
        let data = tempfile::tempdir().expect("a temporary data directory");
        let mut config = Config::default();
        config.server.data_dir = data.path().to_path_buf();
        config.server.cache_dir = Some(shared_cache());
        config.auth.admin_password = Some(Secret(ADMIN_PASSWORD.into()));
        config.workers.count = 2;
        let r = &mut config.rate_limit;
        r.read_per_minute = 0;
        r.write_per_minute = 0;
        r.execute_per_minute = 0;
        r.login_per_minute = 0;
        r.login_global_per_minute = 0;
        r.failed_auth_per_minute = 0;
        configure(&mut config);
        let state = crate::serve::assemble_with(config, None, syncer)
            .await
            .expect("the node assembles");
        state
            .auth
            .first_admin_made()
            .await
            .expect("the first admin is made");
        state.lifecycle.ready();
        let mut app = Self {
            router: super::router(state),
            token: String::new(),
            answered: std::sync::Mutex::default(),
            _data: data,
        };
        app.token = app.login_token("admin", ADMIN_PASSWORD).await;
        app
    }

    /// A request as the first admin.
    pub fn request(&self, method: Method, path: &str) -> Call<'_> {
        self.anonymous(method, path).token(&self.token)
    }

    pub fn get(&self, path: &str) -> Call<'_> {
        self.request(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> Call<'_> {
        self.request(Method::POST, path)
    }

    pub fn put(&self, path: &str) -> Call<'_> {
        self.request(Method::PUT, path)
    }

    /// A request with `Authorization: Bearer <token>`.
    pub fn with_token(&self, token: &str, method: Method, path: &str) -> Call<'_> {
        self.anonymous(method, path).token(token)
    }

    /// A request with `X-API-Key: <key>`.
    pub fn with_key(&self, key: &str, method: Method, path: &str) -> Call<'_> {
        self.anonymous(method, path).key(key)
    }

    /// A request with no credential, from 127.0.0.1.
    pub fn anonymous(&self, method: Method, path: &str) -> Call<'_> {
        Call {
            app: self,
            method,
            path: path.to_owned(),
            headers: HeaderMap::new(),
            body: Vec::new(),
            from: SocketAddr::from(([127, 0, 0, 1], 40_000)),
        }
    }

    /// `POST /v1/auth/login`.
    pub async fn login(&self, username: &str, password: &str) -> Reply {
        self.anonymous(Method::POST, "/v1/auth/login")
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
    }

    async fn login_token(&self, username: &str, password: &str) -> String {
        let login = self.login(username, password).await;
        assert_eq!(
            login.status(),
            200,
            "{username} cannot log in: {}",
            login.text()
        );
        login.json()["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned()
    }

    /// Creates a user with `role` (password: "<username> password") and
    /// returns its id and an access token of theirs.
    pub async fn create_user(&self, username: &str, role: &str) -> (String, String) {
        let password = format!("{username} password");
        let created = self
            .post("/v1/users")
            .json(&json!({"username": username, "password": password, "role": role}))
            .send()
            .await
            .expect(201);
        let id = created["id"].as_str().expect("a user id").to_owned();
        (id, self.login_token(username, &password).await)
    }

    /// Creates an API key with `scopes` for the user whose access token is
    /// `token` and returns the key.
    pub async fn api_key(&self, token: &str, name: &str, scopes: &[&str]) -> String {
        let created = self
            .anonymous(Method::POST, "/v1/api-keys")
            .token(token)
            .json(&json!({"name": name, "scopes": scopes}))
            .send()
            .await
            .expect(201);
        created["key"].as_str().expect("a key").to_owned()
    }

    /// Creates a script and returns its JSON.
    pub async fn create_script(&self, name: &str, language: &str, content: &str) -> Value {
        self.post("/v1/scripts")
            .json(&json!({"name": name, "language": language, "content": content}))
            .send()
            .await
            .expect(201)
    }

    /// Uploads a test guest component as `name` (base64 in JSON) and
    /// returns the script's JSON.
    pub async fn create_component(&self, name: &str, path: &str) -> Value {
        use base64::Engine as _;
        let bytes = std::fs::read(path).expect("a built test guest");
        let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
        self.post("/v1/scripts")
            .json(&json!({"name": name, "language": "wasm", "content_base64": encoded}))
            .send()
            .await
            .expect(201)
    }

    /// `POST /v1/scripts/{script}/execute{query}` with a JSON body.
    pub async fn execute(&self, script: &str, query: &str, body: Value) -> Reply {
        self.post(&format!("/v1/scripts/{script}/execute{query}"))
            .json(&body)
            .send()
            .await
    }

    /// Runs a script with `?wait=true` and returns the finished execution.
    pub async fn run(&self, script: &str, body: Value) -> Value {
        self.execute(script, "?wait=true", body).await.expect(200)
    }
}

/// A request being built; `send` routes it.
pub struct Call<'a> {
    app: &'a TestApp,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
    from: SocketAddr,
}

impl Call<'_> {
    /// `Authorization: Bearer <token>`.
    pub fn token(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// `X-API-Key: <key>`, with no bearer token.
    pub fn key(mut self, key: &str) -> Self {
        self.headers.remove("authorization");
        self.header("x-api-key", key)
    }

    /// No credential at all.
    pub fn without_credentials(mut self) -> Self {
        self.headers.remove("authorization");
        self.headers.remove("x-api-key");
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.insert(
            HeaderName::try_from(name).expect("a header name"),
            HeaderValue::try_from(value).expect("a header value"),
        );
        self
    }

    pub fn json(self, body: &Value) -> Self {
        self.header("content-type", "application/json")
            .body(body.to_string())
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// As if the connection came from `ip`.
    pub fn from(mut self, ip: IpAddr) -> Self {
        self.from = SocketAddr::new(ip, 40_000);
        self
    }

    pub async fn send(self) -> Reply {
        let method = self.method.clone();
        let mut request = Request::builder()
            .method(self.method)
            .uri(&self.path)
            .body(Body::from(self.body))
            .expect("a request");
        *request.headers_mut() = self.headers;
        request.extensions_mut().insert(ConnectInfo(self.from));
        let response = match self.app.router.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), 64 << 20)
            .await
            .expect("the whole body");
        if let Some(operation) = answers::check(&method, &self.path, status, &headers, &body) {
            self.app
                .answered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(operation);
        }
        Reply {
            status,
            headers,
            body: body.to_vec(),
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.body
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// A header's value ("" when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    /// The JSON body, after checking the status is `status`.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        self.json()
    }

    /// The JSON body of an error, checked against the contract's shape:
    /// status, code, a message, the request id of the response, a UTC
    /// timestamp and a details array.
    #[track_caller]
    pub fn error(self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        assert!(
            self.header("content-type").starts_with("application/json"),
            "{:?}",
            self.headers
        );
        let body = self.json();
        let error = &body["error"];
        assert_eq!(error["code"], code, "{body}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{body}"
        );
        assert_eq!(error["request_id"], self.header("x-request-id").as_str());
        assert!(
            error["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z')),
            "{body}"
        );
        assert!(error["details"].is_array(), "{body}");
        body
    }
}

#[tokio::test]
async fn a_test_app_serves_the_api_to_its_admin_and_refuses_strangers() {
    let app = TestApp::new().await;
    let me = app.get("/v1/users/me").send().await.expect(200);
    assert_eq!(me["username"], "admin");
    app.get("/v1/users/me")
        .without_credentials()
        .send()
        .await
        .error(401, "AUTHENTICATION_REQUIRED");
}

/// How many of the newest 100 completed executions the first admin lists
/// started while `run` waited: after it was made, before it started.
pub async fn started_while_it_waited(app: &TestApp, run: &Value) -> usize {
    let page = app
        .get("/v1/executions?status=completed&size=100")
        .send()
        .await
        .expect(200);
    page["data"]
        .as_array()
        .expect("executions")
        .iter()
        .filter(|e| {
            e["id"] != run["id"]
                && e["started_at"].as_str() > run["created_at"].as_str()
                && e["started_at"].as_str() < run["started_at"].as_str()
        })
        .count()
}

/// [`Reply::error`], for tests written against the end-to-end harness's
/// `error_body`.
#[track_caller]
pub fn error_body(reply: Reply, status: u16, code: &str) -> Value {
    reply.error(status, code)
}

/// The JSON body, after checking the status is `status`.
#[track_caller]
pub fn json_of(reply: Reply, status: u16) -> Value {
    reply.expect(status)
}
