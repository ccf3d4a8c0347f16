//! Hardware inventory: what the agent finds on the machine, reported at every netboot.
//! [`collect`] reads a procfs/sysfs/dev tree under a root given as a path (`/` on a
//! machine, a temp dir in tests); [`signatures`] parses a device's first and last bytes.

pub mod collect;
pub mod signatures;

pub use collect::collect;
