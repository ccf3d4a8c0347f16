//! Admin API tokens (never their secrets).

use kiln_api::TokenInfo;

use super::{dash, table};

pub fn list(all: &[TokenInfo]) -> String {
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.name.clone(),
                t.scope.as_str().into(),
                t.created.clone(),
                dash(t.revoked.clone()),
            ]
        })
        .collect();
    table(&["ID", "NAME", "SCOPE", "CREATED", "REVOKED"], &rows)
}
