//! `kiln login`, `kiln logout` and `kiln whoami`.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use reqwest::Method;
use serde_json::json;

use super::api::{self, Api};
use super::output;
use super::profile::{Credential, Profile, ProfileFile};
use super::{ClientError, Common};

/// Where `kiln login` goes without a URL (and `kiln serve` listens by default).
const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Arguments of `kiln login`.
#[derive(Debug, clap::Args)]
pub struct LoginArgs {
    /// The server's base URL [default: the profile's, else http://127.0.0.1:8080].
    pub url: Option<String>,
    /// The user to log in as (asked on a terminal if absent).
    #[arg(short, long)]
    pub username: Option<String>,
    /// Read the password from the first line of stdin instead of asking.
    #[arg(long, conflicts_with_all = ["api_key", "api_key_stdin"])]
    pub password_stdin: bool,
    /// Use this API key instead of a password (it is checked, then kept).
    /// A key on the command line shows in `ps` and the shell's history:
    /// prefer --api-key-stdin.
    #[arg(long, conflicts_with = "api_key_stdin")]
    pub api_key: Option<String>,
    /// Read the API key from the first line of stdin.
    #[arg(long)]
    pub api_key_stdin: bool,
    /// The authenticator app's current code (or a recovery code), for an
    /// account with one-time codes on; asked on a terminal if the server
    /// wants one and this is absent.
    #[arg(long, conflicts_with_all = ["api_key", "api_key_stdin"])]
    pub otp: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

pub(crate) async fn login(args: LoginArgs) -> Result<ExitCode, ClientError> {
    let file = ProfileFile::locate()?;
    let known = file.load()?.profiles.remove(&args.common.profile);
    let url = match (&args.url, &known) {
        (Some(url), _) => normalise_url(url)?,
        (None, Some(profile)) => profile.url.clone(),
        (None, None) => DEFAULT_URL.to_owned(),
    };
    let http = api::http_client()?;
    let key = match (&args.api_key, args.api_key_stdin) {
        (Some(key), _) => Some(key.clone()),
        (None, true) => Some(first_line_of_stdin("the API key")?),
        (None, false) => None,
    };
    let (credential, user) = if let Some(key) = key {
        let response = http
            .get(format!("{url}/v1/users/me"))
            .header("x-api-key", &key)
            .send()
            .await
            .map_err(|e| api::transport(&url, &e))?;
        let user = api::read_json(response).await?;
        (Credential::ApiKey { key }, user)
    } else {
        let username = match &args.username {
            Some(name) => name.clone(),
            None => ask("Username: ")?,
        };
        let password = if args.password_stdin {
            first_line_of_stdin("the password")?
        } else if std::io::stdin().is_terminal() {
            rpassword::prompt_password("Password: ")
                .map_err(|e| ClientError::Usage(format!("cannot read the password: {e}")))?
        } else {
            return Err(ClientError::Usage(
                "no terminal to ask for the password on: pass --password-stdin or --api-key".into(),
            ));
        };
        let attempt = async |otp: Option<&str>| {
            let response = http
                .post(format!("{url}/v1/auth/login"))
                .json(&json!({ "username": username, "password": password, "otp": otp }))
                .send()
                .await
                .map_err(|e| api::transport(&url, &e))?;
            api::read_json(response).await
        };
        let tokens = match attempt(args.otp.as_deref()).await {
            Err(ClientError::Api { code, .. }) if code == "OTP_REQUIRED" && args.otp.is_none() => {
                if args.password_stdin || !std::io::stdin().is_terminal() {
                    return Err(ClientError::Usage(
                        "this account wants a one-time code as well: pass --otp CODE".into(),
                    ));
                }
                let otp = ask("One-time code: ")?;
                attempt(Some(otp.trim())).await?
            }
            other => other?,
        };
        let user = tokens["user"].clone();
        (api::session_from(username, &tokens)?, user)
    };
    let locked = file.lock()?;
    let mut profiles = file.load()?;
    profiles.profiles.insert(
        args.common.profile.clone(),
        Profile {
            url: url.clone(),
            credential,
        },
    );
    file.save(&profiles, &locked)?;
    if args.common.json {
        output::json(&json!({ "url": url, "profile": args.common.profile, "user": user }));
    } else {
        println!(
            "Logged in to {url} as {} (profile {})",
            output::cell(&user["username"]),
            args.common.profile
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Ends a password session on the server and forgets the profile. An API
/// key is only forgotten here: it stays valid until revoked.
pub(crate) async fn logout(common: Common) -> Result<ExitCode, ClientError> {
    let mut api = Api::open(&common)?;
    let note = match api.credential {
        Credential::Session { .. } => {
            match api.json(Method::POST, "/v1/auth/logout", None).await {
                // Ended already (or long expired): nothing left to end.
                Ok(_) | Err(ClientError::SessionEnded { .. }) => "",
                Err(e @ ClientError::Api { status: 401, .. }) => {
                    tracing::debug!(error = %e, "the session had ended");
                    ""
                }
                Err(e) => return Err(e),
            }
        }
        Credential::ApiKey { .. } => {
            " (the API key itself stays valid: `kiln rm key ID` revokes it)"
        }
    };
    let file = ProfileFile::locate()?;
    let locked = file.lock()?;
    let mut profiles = file.load()?;
    profiles.profiles.remove(&common.profile);
    file.save(&profiles, &locked)?;
    if common.json {
        output::json(&json!({ "url": api.base, "profile": common.profile }));
    } else {
        println!("Logged out of {}{note}", api.base);
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn whoami(common: Common) -> Result<ExitCode, ClientError> {
    let mut api = Api::open(&common)?;
    let user = api.json(Method::GET, "/v1/users/me", None).await?;
    if common.json {
        output::json(&user);
        return Ok(ExitCode::SUCCESS);
    }
    let by = match &api.credential {
        Credential::Session { .. } => "a password login".to_owned(),
        Credential::ApiKey { key } => {
            format!("API key {}…", key.chars().take(9).collect::<String>())
        }
    };
    println!(
        "{} ({}) at {}, profile {}, by {by}",
        output::cell(&user["username"]),
        output::cell(&user["role"]),
        api.base,
        api.profile_name
    );
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `kiln passwd`.
#[derive(Debug, clap::Args)]
pub struct PasswdArgs {
    /// Read the current and the new password from the first two lines of
    /// stdin instead of asking.
    #[arg(long)]
    pub stdin: bool,
    /// Also revoke every API key of yours.
    #[arg(long)]
    pub revoke_keys: bool,
    #[command(flatten)]
    pub common: Common,
}

/// Changes the profile's user's password. A password session goes on
/// (the server ends only the others).
pub(crate) async fn passwd(args: PasswdArgs) -> Result<ExitCode, ClientError> {
    let mut api = Api::open(&args.common)?;
    let (current, new) = if args.stdin {
        let mut lines = std::io::stdin().lock().lines();
        let mut line = |what: &str| -> Result<String, ClientError> {
            lines
                .next()
                .transpose()
                .map_err(|e| ClientError::Usage(format!("cannot read {what}: {e}")))?
                .ok_or_else(|| ClientError::Usage(format!("stdin ended before {what}")))
        };
        (line("the current password")?, line("the new password")?)
    } else if std::io::stdin().is_terminal() {
        let prompt = |p: &str| {
            rpassword::prompt_password(p)
                .map_err(|e| ClientError::Usage(format!("cannot read the password: {e}")))
        };
        let current = prompt("Current password: ")?;
        let new = prompt("New password: ")?;
        if prompt("New password again: ")? != new {
            return Err(ClientError::Usage("the new passwords differ".into()));
        }
        (current, new)
    } else {
        return Err(ClientError::Usage(
            "no terminal to ask for the passwords on: pass --stdin".into(),
        ));
    };
    let body =
        json!({ "current_password": current, "password": new, "revoke_keys": args.revoke_keys });
    let user = api.json(Method::PUT, "/v1/users/me", Some(&body)).await?;
    if args.common.json {
        output::json(&user);
    } else {
        let sessions = match api.credential {
            Credential::Session { .. } => "your other login sessions have ended",
            Credential::ApiKey { .. } => "your login sessions have ended",
        };
        println!(
            "Password changed for {}; {sessions}{}",
            output::cell(&user["username"]),
            if args.revoke_keys {
                " and your API keys are revoked"
            } else {
                ""
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A base URL as the profile keeps it: with a scheme, without a trailing `/`.
fn normalise_url(url: &str) -> Result<String, ClientError> {
    let with_scheme = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    let parsed = url::Url::parse(&with_scheme)
        .map_err(|e| ClientError::Usage(format!("{url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ClientError::Usage(format!(
            "{url:?}: the server is reached over http or https"
        )));
    }
    Ok(with_scheme.trim_end_matches('/').to_owned())
}

fn first_line_of_stdin(what: &str) -> Result<String, ClientError> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| ClientError::Usage(format!("cannot read {what} from stdin: {e}")))?;
    let line = line.trim_end_matches(['\r', '\n']).to_owned();
    if line.is_empty() {
        return Err(ClientError::Usage(format!("stdin did not hold {what}")));
    }
    Ok(line)
}

fn ask(prompt: &str) -> Result<String, ClientError> {
    if !std::io::stdin().is_terminal() {
        return Err(ClientError::Usage(
            "no terminal to ask on: pass --username".into(),
        ));
    }
    eprint!("{prompt}");
    first_line_of_stdin("an answer")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_a_scheme_and_lose_the_trailing_slash() {
        assert_eq!(
            normalise_url("127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            normalise_url("https://kiln.example/").unwrap(),
            "https://kiln.example"
        );
        assert!(matches!(
            normalise_url("ftp://kiln.example"),
            Err(ClientError::Usage(_))
        ));
    }
}
