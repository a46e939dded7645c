//! One server and one credential: requests carry it, a session's access
//! token is renewed before it expires (and once more if the server says it
//! has), and every error answer becomes a [`ClientError::Api`].

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};

use super::profile::{Credential, Profile, ProfileFile};
use super::{ClientError, Common};

/// An access token this close to its expiry is renewed before use, so a
/// request does not carry one that lapses on the way.
const RENEW_MARGIN_SECS: u64 = 30;

/// A renewal holds the profiles' lock, which every other command waits
/// for: it must not hang on a stalled server.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(30);

/// The most of an answer read into memory (the largest is an execution
/// with both outputs at the server's cap); a bigger one is not a Kiln
/// server's.
pub const MAX_ANSWER_BYTES: usize = 64 << 20;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Api {
    http: reqwest::Client,
    pub base: String,
    pub profile_name: String,
    file: ProfileFile,
    pub credential: Credential,
    /// `X-Kiln-Organization` on every request, if given.
    organization: Option<String>,
}

impl Api {
    /// The server and credential of the profile `common` names.
    pub fn open(common: &Common) -> Result<Self, ClientError> {
        let file = ProfileFile::locate()?;
        let Profile { url, credential } = file.profile(&common.profile)?;
        Ok(Self {
            http: http_client()?,
            base: url,
            profile_name: common.profile.clone(),
            file,
            credential,
            organization: common.organization.clone(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends the request `build` makes for a URL, with the credential. It is
    /// built again for the retry after a renewal, so bodies need not clone.
    pub async fn send(
        &mut self,
        build: impl Fn(&reqwest::Client, String) -> RequestBuilder,
    ) -> Result<Response, ClientError> {
        if self.due() {
            self.renew().await?;
        }
        let response = self.attempt(&build).await?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED
            && matches!(self.credential, Credential::Session { .. })
        {
            self.renew().await?;
            return self.attempt(&build).await;
        }
        Ok(response)
    }

    /// A JSON request (`body` if any) whose answer is JSON.
    pub async fn json(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, ClientError> {
        let response = self
            .send(|http, base| {
                let request = http.request(method.clone(), format!("{base}{path}"));
                match body {
                    Some(body) => request.json(body),
                    None => request,
                }
            })
            .await?;
        read_json(response).await
    }

    async fn attempt(
        &self,
        build: &impl Fn(&reqwest::Client, String) -> RequestBuilder,
    ) -> Result<Response, ClientError> {
        let mut request = build(&self.http, self.base.clone());
        if let Some(organization) = &self.organization {
            request = request.header("x-kiln-organization", organization);
        }
        let (name, value) = self.credential_header();
        request
            .header(name, value)
            .send()
            .await
            .map_err(|e| transport(&self.base, &e))
    }

    /// A new access token, under the profiles' lock. If another command
    /// renewed this session meanwhile, its tokens are taken instead: the
    /// refresh token this one holds is spent.
    async fn renew(&mut self) -> Result<(), ClientError> {
        let locked = self.file.lock()?;
        let mut profiles = self.file.load()?;
        let stored = profiles
            .profiles
            .get(&self.profile_name)
            .cloned()
            .ok_or_else(|| ClientError::NotLoggedIn(self.profile_name.clone()))?;
        if stored.url != self.base {
            // Logged in elsewhere meanwhile: neither spend nor overwrite that.
            return Err(ClientError::Profile(format!(
                "profile {:?} now points at {}; run the command again",
                self.profile_name, stored.url
            )));
        }
        if stored.credential != self.credential {
            self.credential = stored.credential;
            if !self.due() {
                return Ok(());
            }
        }
        let Credential::Session {
            username,
            refresh_token,
            ..
        } = &self.credential
        else {
            return Ok(());
        };
        let response = self
            .http
            .post(self.url("/v1/auth/refresh"))
            .json(&json!({ "refresh_token": refresh_token }))
            // Other commands wait on the lock meanwhile.
            .timeout(REFRESH_TIMEOUT)
            .send()
            .await
            .map_err(|e| transport(&self.base, &e))?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            let reason = match read_json(response).await {
                Err(ClientError::Api { message, .. }) => message,
                _ => "the server refused its refresh token".into(),
            };
            return Err(ClientError::SessionEnded {
                profile: self.profile_name.clone(),
                reason,
            });
        }
        let tokens = read_json(response).await?;
        // The old refresh token is spent: use the new pair even if it
        // cannot be kept.
        self.credential = session_from(username.clone(), &tokens)?;
        profiles.profiles.insert(
            self.profile_name.clone(),
            Profile {
                url: self.base.clone(),
                credential: self.credential.clone(),
            },
        );
        if let Err(e) = self.file.save(&profiles, &locked) {
            super::output::error(&format!(
                "the renewed login could not be kept ({e}): the next command will need `kiln login`"
            ));
        }
        Ok(())
    }

    /// A WebSocket to `path` (`ws://` or `wss://` as the server's URL is
    /// `http://` or `https://`), with the credential; a refused handshake
    /// is the error its envelope names.
    pub async fn socket(&mut self, path: &str) -> Result<Socket, ClientError> {
        use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};
        if self.due() {
            self.renew().await?;
        }
        let url = match self.base.split_once("://") {
            Some(("https", rest)) => format!("wss://{rest}{path}"),
            Some((_, rest)) => format!("ws://{rest}{path}"),
            None => format!("ws://{}{path}", self.base),
        };
        let mut request = url
            .into_client_request()
            .map_err(|e| ClientError::Protocol(format!("cannot make a WebSocket request: {e}")))?;
        let (name, value) = self.credential_header();
        let value = value.parse().map_err(|_| {
            ClientError::Profile("the stored credential is not a header value".into())
        })?;
        request.headers_mut().insert(name, value);
        if let Some(organization) = &self.organization {
            let value = organization
                .parse()
                .map_err(|_| ClientError::Profile("--org is not a header value".into()))?;
            request.headers_mut().insert("x-kiln-organization", value);
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(socket),
            Err(tungstenite::Error::Http(response)) => {
                let status = reqwest::StatusCode::from_u16(response.status().as_u16())
                    .unwrap_or(reqwest::StatusCode::BAD_GATEWAY);
                Err(api_error(
                    status,
                    response.body().as_deref().unwrap_or_default(),
                ))
            }
            Err(e) => Err(ClientError::Unreachable {
                url: self.base.clone(),
                reason: e.to_string(),
            }),
        }
    }

    /// The header that carries the credential, for HTTP and WebSocket alike.
    fn credential_header(&self) -> (&'static str, String) {
        match &self.credential {
            Credential::Session { access_token, .. } => {
                ("authorization", format!("Bearer {access_token}"))
            }
            Credential::ApiKey { key } => ("x-api-key", key.clone()),
        }
    }

    /// Whether a session's access token is about to expire.
    fn due(&self) -> bool {
        matches!(&self.credential, Credential::Session { access_expires_at, .. }
            if *access_expires_at <= now_secs() + RENEW_MARGIN_SECS)
    }
}

/// The HTTP client every verb uses: no overall timeout (`exec` and `logs
/// --follow` stream for as long as a run lasts), a bounded connect.
pub fn http_client() -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ClientError::Protocol(format!("cannot make an HTTP client: {e}")))
}

/// The credential a login answer (`TokenResponse`) gives.
pub fn session_from(username: String, tokens: &Value) -> Result<Credential, ClientError> {
    let text = |field: &str| {
        tokens[field].as_str().map(str::to_owned).ok_or_else(|| {
            ClientError::Protocol(format!("the server's token answer has no {field}"))
        })
    };
    Ok(Credential::Session {
        username,
        access_token: text("access_token")?,
        refresh_token: text("refresh_token")?,
        access_expires_at: now_secs() + tokens["expires_in"].as_u64().unwrap_or(0),
    })
}

/// The body of a success as JSON (`null` when empty), or the error the
/// server's envelope describes.
pub async fn read_json(response: Response) -> Result<Value, ClientError> {
    read_json_within(response, MAX_ANSWER_BYTES).await
}

async fn read_json_within(mut response: Response, most: usize) -> Result<Value, ClientError> {
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| ClientError::Protocol(format!("the answer broke off: {e}")))?
    {
        if body.len() + chunk.len() > most {
            return Err(ClientError::Protocol(format!(
                "an answer of over {most} bytes: this is not a Kiln server"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    if status.is_success() {
        if body.is_empty() {
            return Ok(Value::Null);
        }
        return serde_json::from_slice(&body).map_err(|e| {
            ClientError::Protocol(format!("the server's answer is not JSON ({status}): {e}"))
        });
    }
    Err(api_error(status, &body))
}

/// The error an envelope names; a body that is not one (a proxy's page)
/// is quoted as it is.
pub fn api_error(status: reqwest::StatusCode, body: &[u8]) -> ClientError {
    let envelope: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let error = &envelope["error"];
    let Some(code) = error["code"].as_str() else {
        let text = String::from_utf8_lossy(body);
        return ClientError::Protocol(format!(
            "the server answered {status}: {}",
            text.chars().take(300).collect::<String>()
        ));
    };
    let details = error["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| {
            let message = d["message"].as_str()?;
            Some(match d["field"].as_str() {
                Some(field) => format!("\n  {field}: {message}"),
                None => format!("\n  {message}"),
            })
        })
        .collect();
    ClientError::Api {
        status: status.as_u16(),
        code: code.to_owned(),
        message: error["message"].as_str().unwrap_or("").to_owned(),
        details,
        request_id: error["request_id"].as_str().unwrap_or("-").to_owned(),
    }
}

/// A request that got no answer: what failed, down to its first cause.
pub fn transport(base: &str, e: &reqwest::Error) -> ClientError {
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        reason = cause.to_string();
        source = cause.source();
    }
    ClientError::Unreachable {
        url: base.to_owned(),
        reason,
    }
}

pub fn now_secs() -> u64 {
    crate::now_ms() / 1000
}

/// A name or id as one URL path segment: names and ids only ever have
/// these characters, and anything else would change the route.
pub fn path_segment<'a>(value: &'a str, what: &str) -> Result<&'a str, ClientError> {
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if value.is_empty() || value == "." || value == ".." || !value.chars().all(fine) {
        return Err(ClientError::Usage(format!(
            "{value:?} is not a {what} name or id (letters, digits, `_`, `.`, `-`)"
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer is read only up to the bound, however long it goes on.
    #[tokio::test]
    async fn an_answer_past_the_bound_is_refused_not_held() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut byte = [0; 1];
            while !request.ends_with(b"\r\n\r\n") && socket.read(&mut byte).await.unwrap_or(0) == 1
            {
                request.push(byte[0]);
            }
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 4096\r\n\r\n";
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(&[b' '; 4096]).await;
        });
        let response = http_client()
            .unwrap()
            .get(format!("http://{address}/"))
            .send()
            .await
            .unwrap();
        let error = read_json_within(response, 1000).await.unwrap_err();
        assert!(error.to_string().contains("over 1000 bytes"), "{error}");
    }

    #[test]
    fn an_envelope_becomes_an_error_naming_code_fields_and_request() {
        let body = json!({"error": {"code": "VALIDATION_ERROR", "message": "bad input",
            "details": [{"field": "name", "message": "must not be empty"}, {"message": "also"}],
            "request_id": "req-1", "timestamp": "t"}});
        let error = api_error(
            reqwest::StatusCode::BAD_REQUEST,
            body.to_string().as_bytes(),
        );
        assert_eq!(error.code(), Some("VALIDATION_ERROR"));
        assert_eq!(
            error.to_string(),
            "VALIDATION_ERROR: bad input\n  name: must not be empty\n  also (HTTP 400, request req-1)"
        );
    }

    #[test]
    fn a_body_that_is_no_envelope_is_quoted() {
        let error = api_error(
            reqwest::StatusCode::BAD_GATEWAY,
            b"<html>upstream down</html>",
        );
        assert_eq!(
            error.to_string(),
            "the server answered 502 Bad Gateway: <html>upstream down</html>"
        );
    }
}
