//! The fused masked AdamW and `GmtAdamW`, the optimizer that ties selection and update together
//! (DESIGN.md §1, §3).
//!
//! - [`config`]: [`AdamWConfig`], [`MaskMode`], [`StepReport`] and input checks.
//! - [`math`]: the update of one entry ([`math::masked_update`]) and the per-step scalars
//!   ([`math::StepScalars`]): the one formula the CPU engine and the CUDA kernel share.
//! - `cpu`: the work list of chunks and the rayon pass that applies the update to every tensor;
//!   `slots`: how f32, bf16+master and bf16 stochastic parameters are read and written.
//! - `optimizer`: [`GmtAdamW`] (construction, the public step entry points, input checks) and
//!   [`Precision`]; `step`: the stages of a step (selection or scan, fused update, report).
//! - `stability`: [`MaskStability`], the fraction of each tensor's kept entries that were kept at
//!   the step before (opt-in with `GmtAdamW::track_stability`; free when off).
//! - `checkpoint`: `GmtAdamW::save` / `GmtAdamW::load` (safetensors, atomic writes) and
//!   [`table_fingerprint`]; a sharded rank saves and loads its own slices.
//! - `sharded`: `GmtAdamW::sharded` (one rank of a sharded model) and its step's exchange when no
//!   selection runs.
//! - `state`: the state as flat host vectors, through which the CUDA optimizer
//!   ([`crate::cuda::CudaGmtAdamW`]) writes and reads the same checkpoints.
//!
//! For the CUDA backend (DESIGN.md §3): a fused kernel mirrors [`math::masked_update`] line for
//! line (compiled without FMA contraction to match bit for bit), takes [`math::StepScalars`]
//! (`repr(C)`) by value, decides `keep` per tensor as `cpu::KeepRule` does (dense: all; GMT:
//! `key >= threshold_key` of the tensor's group; random: the draw of [`crate::rng`] against
//! `rng::random_cut(ratio)`; frozen: nothing written), rounds bf16 parameters with
//! [`math::bf16_round_nearest`] or [`crate::rng::stochastic_round_bf16`], and reads the skip flag
//! instead of the host's early return. The global index of an entry is
//! `table.offsets()[tensor] + i`, so results do not depend on the launch geometry.
//!
//! ```
//! use gradmask::{AdamWConfig, GmtAdamW, MaskConfig, TensorTable};
//!
//! let table = TensorTable::per_tensor(&[4, 3])?;
//! let mask = MaskConfig { mask_ratio: 0.5, ..MaskConfig::default() };
//! let mut opt = GmtAdamW::new(table, AdamWConfig::default(), mask)?;
//! let (mut a, mut b) = (vec![1.0f32; 4], vec![1.0f32; 3]);
//! let (ga, gb) = ([0.1f32, -0.4, 0.3, 0.0], [2.0f32, 0.0, -1.0]);
//! let report = opt.step(&mut [&mut a[..], &mut b[..]], &[&ga[..], &gb[..]], 1e-3)?;
//! assert!(!report.skipped);
//! assert_eq!(report.groups[0].kept, 2); // -0.4 and 0.3
//! assert!((a[1] - 1.001).abs() < 1e-6); // a kept entry moves by lr at step 1 (g < 0: up)
//! assert_eq!(a[0], 1.0); // a masked one (ZeroGrad, no weight decay, m = 0) does not move
//! # Ok::<(), gradmask::Error>(())
//! ```

mod checkpoint;
pub mod config;
mod cpu;
pub mod math;
mod optimizer;
mod sharded;
mod slots;
mod stability;
mod state;
mod step;

pub(crate) use checkpoint::join_names;
pub use checkpoint::table_fingerprint;
pub use config::{AdamWConfig, MaskMode, StepReport};
pub use optimizer::{GmtAdamW, Precision};
pub(crate) use sharded::config_print;
pub use stability::{MaskStability, TensorStability};
pub(crate) use state::HostState;
