//! Training one method: the loop, the optimizer set-up of each method, evaluation, checkpoints and
//! the per-step metrics.
//! - `trainer`: the loop (micro-batches accumulated, one GMT step on their sum, schedule, eval,
//!   checkpoints, `--resume`);
//! - `methods`: SFT, GMT, random mask, HFT as set-ups of the crate's candle optimizer
//!   (`gradmask::candle::GmtAdamW`, the only optimizer), and the one-off drop;
//! - `eval`: loss, exact match, perplexity; `checkpoint`: save and resume;
//! - `metrics`: `metrics.jsonl`, the per-layer kept fraction and mask stability.

pub mod checkpoint;
pub mod eval;
pub mod methods;
pub mod metrics;
mod trainer;

pub use trainer::*;
