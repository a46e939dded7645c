//! `kiln health [URL]`: asks a server's `/readyz` and exits 0 when it is
//! ready, 1 when it is not (or cannot be reached). A `FROM scratch` image
//! has no curl: its HEALTHCHECK runs this.

use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `kiln health`.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// The server's base URL.
    #[arg(default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub timeout_ms: u64,
}

pub(crate) fn health(args: &HealthArgs) -> ExitCode {
    crate::client::run(probe(args))
}

/// Always an exit status: a probe that cannot reach the server says so
/// and answers 1, as one that finds it unready does.
async fn probe(args: &HealthArgs) -> Result<ExitCode, crate::client::ClientError> {
    let url = format!("{}/readyz", args.url.trim_end_matches('/'));
    let asked = async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(args.timeout_ms))
            .build()?;
        let response = client.get(&url).send().await?;
        let status = response.status();
        Ok::<_, reqwest::Error>((status, response.text().await.unwrap_or_default()))
    };
    Ok(match asked.await {
        Ok((status, _)) if status.is_success() => {
            println!("ready");
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|b| b["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or(body);
            eprintln!("kiln: not ready ({status}): {message}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("kiln: cannot reach {url}: {e}");
            ExitCode::FAILURE
        }
    })
}
