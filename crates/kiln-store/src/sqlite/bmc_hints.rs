//! What the last call to a machine's BMC learnt about it (for Redfish: where its system is and
//! how it authenticates), so the next call goes straight there. A hint is only handed back for
//! the BMC address it was learnt from; it holds paths, never credentials or session tokens.

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::StoreError;

impl crate::BmcHintStore for SqliteStore {
    /// The hint learnt from `hostname`'s BMC at `address`, if any.
    fn bmc_hint(&self, hostname: &str, address: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT hint FROM bmc_hints WHERE hostname = ?1 AND address = ?2",
                params![hostname, address],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records (or replaces) `hostname`'s hint for its BMC at `address`.
    fn set_bmc_hint(&self, hostname: &str, address: &str, hint: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO bmc_hints (hostname, address, hint, updated_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (hostname) DO UPDATE SET address = ?2, hint = ?3, updated_ms = ?4",
            params![hostname, address, hint, crate::records::now_ms()],
        )?;
        Ok(())
    }
}
