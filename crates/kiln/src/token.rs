//! `kiln token create|list|revoke`: admin API tokens, made on the server host (root, the data
//! dir) — the one way in that does not itself need a token.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use kiln_api::TokenScope;
use kiln_server::admin::tokens;

use crate::output::Format;

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

pub fn run(data_dir: &Path, cmd: Command) -> anyhow::Result<ExitCode> {
    let store = tokens::open_local_store(data_dir)
        .with_context(|| format!("opening the store of {}", data_dir.display()))?;
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
            let new = tokens::create(&*store, &name, scope)?;
            if output == Format::Table {
                let i = &new.info;
                eprintln!(
                    "token {} ({}, {}): shown once, keep it secret",
                    i.id,
                    i.name,
                    scope.as_str()
                );
            }
            output.print(&new, |t| format!("{}\n", t.token))?;
        }
        Command::List { output } => {
            let all = tokens::list(&*store)?;
            output.print(&all, |a| kiln_client::render::token::list(a))?;
        }
        Command::Revoke { key } => {
            let n = tokens::revoke(&*store, &key)?;
            if n == 0 {
                anyhow::bail!("no live token has the id or name {key:?}");
            }
            println!("{key}: revoked ({n} token(s))");
        }
    }
    Ok(ExitCode::SUCCESS)
}
