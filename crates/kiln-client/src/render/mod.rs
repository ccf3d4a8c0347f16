//! Text views of the admin API's resources, for the CLI (one module per topic).

pub mod discovered;
pub mod why;
