//! Text renderings of the admin API's views, for the CLI's table output.

pub mod preflight;
