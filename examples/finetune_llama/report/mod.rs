//! What a run reports: per-method results and the comparison table (`results`), spreads over
//! seeds and paired differences against SFT (`stats`, `aggregate`), and PNG plots (`plot`,
//! `sweep_plot`).

pub mod aggregate;
pub mod plot;
mod results;
pub mod stats;
pub mod sweep_plot;

pub use results::*;
