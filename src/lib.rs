//! # gradmask
//!
//! Gradient-Mask Tuning (GMT, Li et al. 2024) for LLM fine-tuning: after gradients are accumulated,
//! keep only the entries whose |g| lies in the top `1 - mask_ratio` fraction of their selection
//! group, then take the AdamW step. This crate computes the exact threshold per group with a radix
//! select (CUDA kernels, and a CPU engine that gives the same thresholds bit for bit).
//!
//! Where each concern lives:
//! - [`table`]: [`TensorTable`] (the model's tensors, validated once) and [`GroupMap`] (tensors
//!   resolved into selection groups for a [`Scope`]).
//! - [`config`]: [`MaskConfig`], [`Scope`], [`MaskedUpdate`] and the kept-count rule.
//! - [`dtype`]: [`DType`] and [`GradElem`], the sign-less |g| keys of f32, bf16 and f16.
//! - [`select`]: [`Selection`] and [`GroupStats`], the result of one selection.
//! - [`cpu`]: [`CpuSelector`], the exact CPU engine (rayon).
//! - [`cuda`]: [`cuda::CudaSelector`], the same selection in CUDA kernels over cudarc buffers, and
//!   [`cuda::CudaGmtAdamW`], selection plus the fused masked AdamW on the caller's stream.
//! - [`adamw`]: [`GmtAdamW`] (selection plus the fused masked AdamW, checkpoints), [`AdamWConfig`],
//!   [`MaskMode`], [`StepReport`], [`MaskStability`] (opt-in: how many kept entries were kept at
//!   the step before), and [`adamw::math`], the per-entry update a kernel mirrors.
//! - [`shard`]: sharded selection (ZeRO/FSDP): [`ShardLayout`], the [`Collective`] all-reduce
//!   and the in-process [`ThreadCollective`], [`Shards`] for [`CpuSelector::sharded`] and
//!   [`GmtAdamW::sharded`]. `work`: the chunk work list every engine builds from.
//! - [`rng`]: the counter-based hash keyed by (seed, step, global index) behind the random mask
//!   and stochastic rounding, with its bit recipe for the CUDA side.
//! - [`tuning`]: radix digit widths and launch constants, mirrored from `kernels/tuning.cuh`.
//! - [`error`]: [`Error`], the one error type, and [`VarProblem`] (what is wrong with a candle var).
//! - `candle` (feature `candle`): `candle::GmtAdamW`, a drop-in `candle_nn::Optimizer` over candle
//!   `Var`s, stepping them in place with the CPU engine or, on candle's CUDA backend (feature
//!   `cuda`), with [`cuda::CudaGmtAdamW`] on candle's device buffers and stream.
//! - `kernels/` (CUDA C++): `tuning.cuh`, `gm_types.cuh` (structs shared with the host), `select.cu`
//!   (histogram and radix refinement kernels), `adamw.cu` (the fused masked AdamW).
//!
//! ```
//! use gradmask::{CpuSelector, Scope, TensorTable};
//!
//! let lengths = [6, 4];
//! let table = TensorTable::per_tensor(&lengths)?;
//! let mut selector = CpuSelector::new(&table, Scope::PerTensor);
//! let a = [0.1f32, -3.0, 0.5, 2.0, -0.2, 0.0];
//! let b = [1.0f32, 1.0, -1.0, 0.25];
//! let selection = selector.select(&[&a[..], &b[..]], 0.5)?; // mask half of each tensor
//! assert_eq!(selection.groups[0].threshold, 0.5); // keeps |g| >= 0.5: -3.0, 2.0, 0.5
//! assert_eq!(selection.groups[0].kept, 3);
//! assert_eq!(selection.groups[1].threshold, 1.0); // ties at the threshold are all kept
//! assert_eq!(selection.groups[1].kept, 3);
//! # Ok::<(), gradmask::Error>(())
//! ```

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod adamw;
#[cfg(feature = "candle")]
pub mod candle;
pub mod config;
pub mod cpu;
pub mod cuda;
pub mod dtype;
pub mod error;
pub mod rng;
pub mod select;
pub mod shard;
pub mod table;
pub mod tuning;
mod work;

pub use adamw::{
    AdamWConfig, GmtAdamW, MaskMode, MaskStability, Precision, StepReport, TensorStability,
};
pub use config::{MaskConfig, MaskedUpdate, Scope};
pub use cpu::CpuSelector;
pub use dtype::{DType, GradElem};
pub use error::{Error, Result, VarProblem};
pub use select::{GroupStats, Selection, KEEP_NONE};
pub use shard::{Collective, CommStats, ShardLayout, Shards, ThreadCollective};
pub use table::{GroupMap, TensorTable};
