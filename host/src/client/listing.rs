//! `kiln ls`, `kiln rm`, `kiln keys create` and `kiln status`.

use std::process::ExitCode;

use clap::ValueEnum;
use reqwest::Method;
use serde_json::json;

use super::api::{Api, path_segment};
use super::{ClientError, Common, output};

/// What `kiln ls` and `kiln rm` work on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    #[value(alias = "script")]
    Scripts,
    #[value(alias = "execution")]
    Executions,
    #[value(alias = "schedule")]
    Schedules,
    #[value(alias = "webhook")]
    Webhooks,
    #[value(alias = "key")]
    Keys,
}

impl Kind {
    fn collection(self) -> &'static str {
        match self {
            Self::Scripts => "/v1/scripts",
            Self::Executions => "/v1/executions",
            Self::Schedules => "/v1/schedules",
            Self::Webhooks => "/v1/webhooks",
            Self::Keys => "/v1/api-keys",
        }
    }

    fn singular(self) -> &'static str {
        match self {
            Self::Scripts => "script",
            Self::Executions => "execution",
            Self::Schedules => "schedule",
            Self::Webhooks => "webhook",
            Self::Keys => "key",
        }
    }

    /// The table's headers and, for each, the field it shows.
    fn columns(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Self::Scripts => &[
                ("NAME", "name"),
                ("LANGUAGE", "language"),
                ("KIND", "kind"),
                ("VERSION", "version"),
                ("STATUS", "status"),
                ("RUNS", "execution_count"),
                ("UPDATED", "updated_at"),
            ],
            Self::Executions => &[
                ("ID", "id"),
                ("SCRIPT", "script_id"),
                ("STATUS", "status"),
                ("TRIGGER", "trigger"),
                ("MS", "duration_ms"),
                ("CREATED", "created_at"),
            ],
            Self::Schedules => &[
                ("ID", "id"),
                ("NAME", "name"),
                ("CRON", "cron"),
                ("TIMEZONE", "timezone"),
                ("ACTIVE", "active"),
                ("NEXT RUN", "next_run_at"),
                ("LAST", "last_status"),
            ],
            Self::Webhooks => &[
                ("ID", "id"),
                ("URL", "url"),
                ("EVENTS", "events"),
                ("ACTIVE", "active"),
            ],
            Self::Keys => &[
                ("ID", "id"),
                ("NAME", "name"),
                ("PREFIX", "prefix"),
                ("SCOPES", "scopes"),
                ("EXPIRES", "expires_at"),
            ],
        }
    }
}

/// Arguments of `kiln ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// What to list.
    #[arg(value_enum)]
    pub kind: Kind,
    /// At most this many (1–100), newest first where the server orders so.
    #[arg(short = 'n', long, default_value_t = 20,
        value_parser = clap::value_parser!(u16).range(1..=100))]
    pub limit: u16,
    /// Which page of that many.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub page: u32,
    #[command(flatten)]
    pub common: Common,
}

/// Arguments of `kiln rm`.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// What to remove (a key is revoked).
    #[arg(value_enum)]
    pub kind: Kind,
    /// Names (scripts) or ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
    #[command(flatten)]
    pub common: Common,
}

/// Arguments of `kiln keys`.
#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum KeysCommand {
    /// Create an API key; it is shown once.
    Create {
        /// A name to tell it apart.
        name: String,
        /// A scope it has, e.g. `execute:scripts` (repeatable, or
        /// comma-separated); each must be one you have.
        #[arg(short, long = "scope", value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Days until it expires [default: never].
        #[arg(long)]
        expires_in_days: Option<u32>,
        #[command(flatten)]
        common: Common,
    },
}

pub(crate) async fn ls(args: LsArgs) -> Result<ExitCode, ClientError> {
    let mut api = Api::open(&args.common)?;
    let path = format!(
        "{}?page={}&size={}",
        args.kind.collection(),
        args.page,
        args.limit
    );
    let listing = api.json(Method::GET, &path, None).await?;
    if args.common.json {
        output::json(&listing);
        return Ok(ExitCode::SUCCESS);
    }
    let items = listing["data"].as_array().cloned().unwrap_or_default();
    let colour = output::colour_stdout();
    let columns = args.kind.columns();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|item| {
            columns
                .iter()
                .map(|(_, field)| {
                    let text = match &item[*field] {
                        serde_json::Value::Bool(true) => "yes".to_owned(),
                        serde_json::Value::Bool(false) => "no".to_owned(),
                        other => output::cell(other),
                    };
                    match *field {
                        "status" | "last_status" | "active" => output::status(&text, colour),
                        _ => text,
                    }
                })
                .collect()
        })
        .collect();
    let headers: Vec<&str> = columns.iter().map(|(header, _)| *header).collect();
    print!("{}", output::table(&headers, &rows, colour));
    let pagination = &listing["pagination"];
    if pagination["has_next"] == json!(true) {
        let total = match pagination["total_elements"].as_u64() {
            Some(total) => format!(" of {total}"),
            None => String::new(),
        };
        eprintln!(
            "{} shown{total}; `--page {}` shows more",
            rows.len(),
            args.page + 1
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn rm(args: RmArgs) -> Result<ExitCode, ClientError> {
    let mut api = Api::open(&args.common)?;
    for id in &args.ids {
        let segment = path_segment(id, args.kind.singular())?;
        let path = format!("{}/{segment}", args.kind.collection());
        api.json(Method::DELETE, &path, None).await?;
        if args.common.json {
            output::json(&json!({ "removed": args.kind.singular(), "id": id }));
        } else {
            println!("Removed {} {id}", args.kind.singular());
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn keys(args: KeysArgs) -> Result<ExitCode, ClientError> {
    let KeysCommand::Create {
        name,
        scopes,
        expires_in_days,
        common,
    } = args.command;
    let mut api = Api::open(&common)?;
    let mut body = json!({ "name": name, "scopes": scopes });
    if let Some(days) = expires_in_days {
        body["expires_in_days"] = json!(days);
    }
    let created = api.json(Method::POST, "/v1/api-keys", Some(&body)).await?;
    if common.json {
        output::json(&created);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}", output::cell(&created["key"]));
    eprintln!(
        "API key {} ({}) for {}: it is shown this once; \
         `kiln login {} --api-key-stdin` uses it",
        output::cell(&created["id"]),
        output::cell(&created["scopes"]),
        api.base,
        api.base
    );
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn status(common: Common) -> Result<ExitCode, ClientError> {
    let mut api = Api::open(&common)?;
    let status = api.json(Method::GET, "/v1/status", None).await?;
    if common.json {
        output::json(&status);
        return Ok(ExitCode::SUCCESS);
    }
    let field = |name: &str| output::cell(&status[name]);
    println!("Kiln {} at {}", field("version"), api.base);
    println!("  up        {} s", field("uptime_seconds"));
    println!(
        "  workers   {} ({} running)",
        field("workers"),
        field("running")
    );
    println!(
        "  queue     {} of {}",
        field("queue_depth"),
        field("queue_capacity")
    );
    println!("  store     {} bytes", field("store_size_bytes"));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_route_and_a_table() {
        for kind in Kind::value_variants() {
            assert!(kind.collection().starts_with("/v1/"));
            assert!(!kind.columns().is_empty());
            assert!(
                Kind::from_str(kind.singular(), false).is_ok(),
                "{:?} is reachable by its singular too",
                kind
            );
        }
    }
}
