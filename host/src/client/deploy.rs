//! `kiln deploy FILE|DIR`: creates the script, or makes its content a new
//! version, as one multipart upload (a `meta` part and a `file` part; a
//! directory goes as a tar.gz of its files). A progress bar shows the
//! upload and a spinner the server's compile, on a terminal only.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Map, Value, json};

use super::api::{self, Api, path_segment};
use super::{ClientError, Common, output};
use crate::script_files::{self, Lang};

/// The upload goes in pieces this big, each moving the progress bar.
const UPLOAD_CHUNK: usize = 64 * 1024;

/// At most this many pages of schedules are searched for the script's own.
const MAX_SCHEDULE_PAGES: u32 = 100;

/// Arguments of `kiln deploy`.
#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// A .js, .py or .wasm file, a directory of JavaScript or Python files
    /// (a bundle), or a zip / tar / tar.gz of one.
    pub path: PathBuf,
    /// The script's name [default: the file's name without its extension].
    #[arg(long)]
    pub name: Option<String>,
    /// The language, when the extension (or a bundle's entry) does not say it.
    #[arg(long, value_enum)]
    pub language: Option<Lang>,
    /// A bundle's file that runs [default: main.js, index.js, main.py or
    /// __main__.py, whichever it has].
    #[arg(long)]
    pub entry: Option<String>,
    /// Let anyone call this HTTP function without a credential.
    #[arg(long)]
    pub public: bool,
    #[arg(long)]
    pub description: Option<String>,
    /// A host its runs may send HTTP requests to (repeatable); replaces the
    /// script's list when given.
    #[arg(long, value_name = "PATTERN")]
    pub allow_host: Vec<String>,
    /// Also run it on this cron schedule (`0 * * * *`, or with seconds);
    /// the schedule is named after the script and updated on redeploys.
    #[arg(long, value_name = "CRON")]
    pub schedule: Option<String>,
    /// The schedule's time zone (IANA, e.g. Europe/Paris) [default: UTC
    /// for a new schedule, else the one it has].
    #[arg(long, value_name = "ZONE", requires = "schedule")]
    pub tz: Option<String>,
    #[command(flatten)]
    pub common: Common,
}

/// What is uploaded.
struct Upload {
    name: String,
    language: Lang,
    bytes: Bytes,
    file_name: String,
}

pub(crate) async fn deploy(args: DeployArgs) -> Result<ExitCode, ClientError> {
    let upload = read_upload(&args)?;
    let name = path_segment(&upload.name, "script")?.to_owned();
    let mut api = Api::open(&args.common)?;
    let existing = api
        .json(Method::GET, &format!("/v1/scripts/{name}"), None)
        .await;
    let (creating, was_public) = match existing {
        Ok(script) => (false, script["public"] == json!(true)),
        Err(e) if e.code() == Some("RESOURCE_NOT_FOUND") => (true, false),
        Err(e) => return Err(e),
    };
    let meta = meta(&args, &upload, creating);
    let bar = progress(upload.bytes.len());
    let (method, path) = if creating {
        (Method::POST, "/v1/scripts".to_owned())
    } else {
        (Method::PUT, format!("/v1/scripts/{name}"))
    };
    let response = api
        .send(|http, base| {
            bar.reset();
            let body = reqwest::Body::wrap_stream(chunks(upload.bytes.clone(), bar.clone()));
            let file = Part::stream_with_length(body, upload.bytes.len() as u64)
                .file_name(upload.file_name.clone());
            let meta = Part::text(meta.to_string())
                .mime_str("application/json")
                .unwrap_or_else(|_| Part::text(meta.to_string()));
            let form = Form::new().part("meta", meta).part("file", file);
            http.request(method.clone(), format!("{base}{path}"))
                .multipart(form)
        })
        .await;
    bar.finish_and_clear();
    let script = api::read_json(response?).await?;
    if was_public && !args.public {
        output::error(&format!(
            "note: {name} is no longer public; `kiln deploy --public` makes it so again"
        ));
    }
    let schedule = match &args.schedule {
        Some(cron) => Some(schedule(&mut api, &script, cron, args.tz.as_deref()).await?),
        None => None,
    };
    if args.common.json {
        output::json(&json!({ "script": script, "schedule": schedule }));
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} {name}: version {} ({} {}, id {})",
        if creating { "Created" } else { "Updated" },
        output::cell(&script["version"]),
        output::cell(&script["language"]),
        output::cell(&script["kind"]),
        output::cell(&script["id"]),
    );
    if script["kind"] == "http" {
        println!("  Call it:  curl {}/fn/{name}/", api.base);
    } else {
        println!("  Run it:   kiln exec {name}");
    }
    if let Some(schedule) = schedule {
        println!(
            "  Schedule: {} ({}), next run {}",
            output::cell(&schedule["cron"]),
            output::cell(&schedule["timezone"]),
            output::cell(&schedule["next_run_at"])
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The `meta` part: what the flags say; the name and language on a
/// create (an update sends the language only if given, so the server
/// refuses a change of it).
fn meta(args: &DeployArgs, upload: &Upload, creating: bool) -> Value {
    let mut meta = Map::new();
    if creating {
        meta.insert("name".into(), json!(upload.name));
    }
    if creating || args.language.is_some() {
        meta.insert(
            "language".into(),
            json!(upload.language.language().as_str()),
        );
    }
    if let Some(entry) = &args.entry {
        meta.insert("entry".into(), json!(entry));
    }
    if args.public || !creating {
        // A redeploy without --public makes the function private again:
        // the command line says the whole intent.
        meta.insert("public".into(), json!(args.public));
    }
    if let Some(description) = &args.description {
        meta.insert("description".into(), json!(description));
    }
    if !args.allow_host.is_empty() {
        meta.insert("allowed_hosts".into(), json!(args.allow_host));
    }
    Value::Object(meta)
}

fn read_upload(args: &DeployArgs) -> Result<Upload, ClientError> {
    let path = &args.path;
    let usage = |message: String| ClientError::Usage(format!("{}: {message}", path.display()));
    let stem = |path: &Path| {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let trimmed = [
            ".tar.gz", ".tgz", ".tar", ".zip", ".wasm", ".mjs", ".js", ".py",
        ]
        .iter()
        .find_map(|extension| name.strip_suffix(extension))
        .map(str::to_owned);
        trimmed.unwrap_or(name)
    };
    if path.is_dir() {
        let mut files = std::collections::BTreeMap::new();
        script_files::read_dir_into(path, "", &mut files, &mut 0, 0).map_err(usage)?;
        let language = match (args.language, &args.entry) {
            (Some(language), _) => language,
            (None, Some(entry)) => script_files::lang_of(Path::new(entry)).map_err(usage)?,
            (None, None) => script_files::bundle_lang(&files).ok_or_else(|| {
                usage("has none of main.js, index.js, main.py and __main__.py: pass --entry".into())
            })?,
        };
        let directory = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        let name = args.name.clone().unwrap_or_else(|| stem(&directory));
        return Ok(Upload {
            bytes: tar_gz(&files).map_err(|e| usage(e.to_string()))?,
            file_name: format!("{name}.tar.gz"),
            name,
            language,
        });
    }
    let bytes = std::fs::read(path).map_err(|e| usage(e.to_string()))?;
    let archive = crate::api::scripts::bundle::is_archive(&bytes);
    let language = match (args.language, &args.entry) {
        (Some(language), _) => language,
        (None, Some(entry)) if archive => script_files::lang_of(Path::new(entry)).map_err(usage)?,
        (None, _) if archive => {
            return Err(usage("is an archive: pass --language (or --entry)".into()));
        }
        (None, _) => script_files::lang_of(path).map_err(usage)?,
    };
    if path.extension().is_some_and(|e| e == "wat") {
        return Err(usage(
            "the server takes a binary component: build the .wasm (e.g. `wasm-tools parse`)".into(),
        ));
    }
    let name = args.name.clone().unwrap_or_else(|| stem(path));
    Ok(Upload {
        file_name: path
            .file_name()
            .map_or_else(|| name.clone(), |n| n.to_string_lossy().into_owned()),
        bytes: Bytes::from(bytes),
        name,
        language,
    })
}

/// A directory's files as a tar.gz, as the server unpacks a bundle.
fn tar_gz(files: &std::collections::BTreeMap<String, String>) -> std::io::Result<Bytes> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut archive = tar::Builder::new(encoder);
    for (path, text) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        archive.append_data(&mut header, path, text.as_bytes())?;
    }
    Ok(Bytes::from(archive.into_inner()?.finish()?))
}

/// The upload in pieces, each moving the bar; after the last, the bar
/// becomes a spinner while the server compiles.
fn chunks(
    bytes: Bytes,
    bar: ProgressBar,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    let total = bytes.len();
    let pieces: Vec<Bytes> = (0..total)
        .step_by(UPLOAD_CHUNK)
        .map(|start| bytes.slice(start..(start + UPLOAD_CHUNK).min(total)))
        .collect();
    futures_util::stream::iter(pieces.into_iter().map(move |piece| {
        bar.inc(piece.len() as u64);
        if bar.position() >= total as u64 {
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_message("compiling on the server");
            bar.enable_steady_tick(Duration::from_millis(100));
        }
        Ok(piece)
    }))
}

/// A bar on stderr, drawn only when stderr is a terminal.
fn progress(total: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    if let Ok(style) = ProgressStyle::with_template("uploading [{bar:30}] {bytes}/{total_bytes}") {
        bar.set_style(style);
    }
    bar
}

/// Creates the schedule named after the script, or gives the script's own
/// schedule of that name this cron (and zone, if one is given; a paused
/// schedule stays paused).
async fn schedule(
    api: &mut Api,
    script: &Value,
    cron: &str,
    zone: Option<&str>,
) -> Result<Value, ClientError> {
    let name = output::cell(&script["name"]);
    let script_id = output::cell(&script["id"]);
    let mut found = None;
    for page in 1..=MAX_SCHEDULE_PAGES {
        let listing = api
            .json(
                Method::GET,
                &format!("/v1/schedules?page={page}&size=100"),
                None,
            )
            .await?;
        found = listing["data"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == name.as_str() && s["script_id"] == script_id.as_str())
            .cloned();
        if found.is_some() || listing["pagination"]["has_next"] != json!(true) {
            break;
        }
    }
    let mut body = json!({ "cron": cron });
    if let Some(zone) = zone {
        body["timezone"] = json!(zone);
    }
    match found {
        Some(existing) => {
            let id = output::cell(&existing["id"]);
            api.json(Method::PUT, &format!("/v1/schedules/{id}"), Some(&body))
                .await
        }
        None => {
            body["name"] = json!(name);
            body["script_id"] = json!(script_id);
            api.json(Method::POST, "/v1/schedules", Some(&body)).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_goes_as_a_tar_gz_the_server_unpacks() {
        let files = std::collections::BTreeMap::from([
            ("main.js".to_owned(), "export default () => 1;".to_owned()),
            ("lib/util.js".to_owned(), "export const x = 1;".to_owned()),
        ]);
        let bytes = tar_gz(&files).unwrap();
        let bundle = crate::api::scripts::bundle::from_archive(
            crate::store::Language::Javascript,
            None,
            &bytes,
        )
        .unwrap();
        let source = kiln_runtime::Source::Bundle(bundle).encode();
        let text = String::from_utf8_lossy(&source);
        assert!(text.contains("export const x = 1;") && text.contains("main.js"));
    }

    #[tokio::test]
    async fn the_upload_comes_out_whole_in_pieces() {
        use futures_util::StreamExt as _;
        let bytes = Bytes::from(vec![7u8; 3 * UPLOAD_CHUNK + 5]);
        let bar = ProgressBar::hidden();
        bar.set_length(bytes.len() as u64);
        let pieces: Vec<Bytes> = chunks(bytes.clone(), bar.clone())
            .map(Result::unwrap)
            .collect()
            .await;
        assert_eq!(pieces.len(), 4);
        assert_eq!(pieces.concat(), bytes.to_vec());
        assert_eq!(bar.position(), bytes.len() as u64);
    }
}
