//! Which names a TFTP request may use: the shared rules of a served root.

pub use kiln_root::{Opened, PathError, open_under, sanitize};
