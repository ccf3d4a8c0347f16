//! `kiln token create|list|revoke`: admin API tokens, made on the server host (root, the data
//! dir) — the one way in that does not itself need a token.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use kiln_api::{NewToken, TokenInfo, TokenScope};
use kiln_store::ApiTokenRecord;

use kiln_api::time::rfc3339_ms;

use crate::output::Format;
use kiln_client::render::table;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Scope {
    /// Everything.
    Admin,
    /// GET only.
    ReadOnly,
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Make a token; it is printed once (keep it in a 0600 file or a secret store).
    Create {
        name: String,
        #[arg(long, value_enum, default_value = "admin")]
        scope: Scope,
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// List tokens (never their secrets).
    List {
        #[arg(long, short, value_enum, default_value_t)]
        output: Format,
    },
    /// Revoke a token by id or name; it stops working at once.
    Revoke { key: String },
}

fn info(r: &ApiTokenRecord) -> TokenInfo {
    TokenInfo {
        id: r.id.clone(),
        name: r.name.clone(),
        scope: TokenScope::parse(&r.scope).unwrap_or(TokenScope::ReadOnly),
        created: rfc3339_ms(r.created_ms),
        revoked: r.revoked_ms.map(rfc3339_ms),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn run(data_dir: &Path, cmd: Command) -> anyhow::Result<ExitCode> {
    // The server's store: KILN_STORE (as `kiln serve` reads it) or kiln.db in the data dir.
    let location = match std::env::var("KILN_STORE") {
        Ok(v) => kiln_store::Location::parse(&v, data_dir)?,
        Err(_) => kiln_store::Location::sqlite(data_dir),
    };
    let store = kiln_store::open(&location, kiln_store::Durability::Full)
        .with_context(|| format!("opening the store ({location:?})"))?;
    match cmd {
        Command::Create {
            name,
            scope,
            output,
        } => {
            let scope = match scope {
                Scope::Admin => TokenScope::Admin,
                Scope::ReadOnly => TokenScope::ReadOnly,
            };
            let (rec, token) = kiln_server::admin::auth::create(&*store, &name, scope, now_ms())?;
            match output {
                Format::Json => {
                    let t = NewToken {
                        info: info(&rec),
                        token,
                    };
                    println!("{}", serde_json::to_string_pretty(&t)?)
                }
                Format::Table => {
                    eprintln!(
                        "token {} ({}, {}): shown once, keep it secret",
                        rec.id,
                        rec.name,
                        scope.as_str()
                    );
                    println!("{token}");
                }
            }
        }
        Command::List { output } => {
            let all: Vec<TokenInfo> = store.api_tokens()?.iter().map(info).collect();
            match output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&all)?),
                Format::Table => {
                    let rows: Vec<Vec<String>> = all
                        .iter()
                        .map(|t| {
                            vec![
                                t.id.clone(),
                                t.name.clone(),
                                t.scope.as_str().into(),
                                t.created.clone(),
                                t.revoked.clone().unwrap_or_else(|| "-".into()),
                            ]
                        })
                        .collect();
                    print!(
                        "{}",
                        table(&["ID", "NAME", "SCOPE", "CREATED", "REVOKED"], &rows)
                    );
                }
            }
        }
        Command::Revoke { key } => {
            let n = store.revoke_api_token(&key, now_ms())?;
            if n == 0 {
                anyhow::bail!("no live token has the id or name {key:?}");
            }
            println!("{key}: revoked ({n} token(s))");
        }
    }
    Ok(ExitCode::SUCCESS)
}
