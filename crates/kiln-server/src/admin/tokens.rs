//! `kiln token create|list|revoke`: admin API tokens managed on the server host, straight in
//! the server's store (the one way in that does not itself need a token).

use std::path::Path;
use std::sync::Arc;

use kiln_api::time::rfc3339_ms;
use kiln_api::{NewToken, TokenInfo, TokenScope};
use kiln_store::{ApiTokenRecord, Store, StoreError};

/// The server's store as `kiln serve` finds it: `KILN_STORE`, or kiln.db in the data dir.
pub fn open_local_store(data_dir: &Path) -> Result<Arc<dyn Store>, StoreError> {
    let location = match std::env::var("KILN_STORE") {
        Ok(v) => kiln_store::Location::parse(&v, data_dir)?,
        Err(_) => kiln_store::Location::sqlite(data_dir),
    };
    kiln_store::open(&location, kiln_store::Durability::Full)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
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

/// A new token: its record and (shown once) its secret.
pub fn create(store: &dyn Store, name: &str, scope: TokenScope) -> Result<NewToken, StoreError> {
    let (rec, token) = super::auth::create(store, name, scope, now_ms())?;
    Ok(NewToken {
        info: info(&rec),
        token,
    })
}

/// Every token, never a secret.
pub fn list(store: &dyn Store) -> Result<Vec<TokenInfo>, StoreError> {
    Ok(store.api_tokens()?.iter().map(info).collect())
}

/// Revokes the live tokens with id or name `key`; how many.
pub fn revoke(store: &dyn Store, key: &str) -> Result<usize, StoreError> {
    store.revoke_api_token(key, now_ms())
}
