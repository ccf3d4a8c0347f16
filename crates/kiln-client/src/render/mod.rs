//! Text rendering of API views for the CLI (one module per topic).

pub mod inventory;
