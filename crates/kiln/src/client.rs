//! How the CLI reaches the admin API: every command but `serve`, `demo` and `token` goes
//! through [`kiln_client`]; here are only its global flags.

use std::path::PathBuf;

pub use kiln_client::{Client, ClientError, Endpoint};

/// How to reach the server; global flags.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServerArgs {
    /// Admin API of the Kiln server (https://HOST:9443); default: the server whose data dir
    /// is --data-dir, on this host.
    #[arg(long, global = true, env = "KILN_SERVER")]
    pub server: Option<String>,
    /// CA certificate (PEM) the server's certificate must chain to; default: DATA_DIR/tls/ca.crt.
    #[arg(long, global = true, env = "KILN_CA")]
    pub ca: Option<PathBuf>,
    /// File holding the bearer token (KILN_TOKEN, when set, wins); default: DATA_DIR/admin.token.
    #[arg(long, global = true, env = "KILN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

impl ServerArgs {
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            server: self.server.clone(),
            ca: self.ca.clone(),
            token_file: self.token_file.clone(),
        }
    }
}
