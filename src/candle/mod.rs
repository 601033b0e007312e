//! `gradmask::candle` (feature `candle`): GMT as a drop-in [`candle_nn::Optimizer`] over candle
//! [`Var`](candle_core::Var)s. Adopting it is a change of one constructor:
//!
//! ```
//! # use candle_core::{DType, Device, Tensor};
//! # use candle_nn::{Module, Optimizer, VarBuilder, VarMap};
//! use gradmask::{AdamWConfig, MaskConfig};
//!
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let layer = candle_nn::linear(4, 1, vb.pp("fc"))?;
//! let mask = MaskConfig { mask_ratio: 0.5, ..MaskConfig::default() }; // update half of each tensor
//! // was: let mut opt = candle_nn::AdamW::new(varmap.all_vars(), params)?;
//! let mut opt = gradmask::candle::GmtAdamW::new(&varmap, AdamWConfig::default(), mask)?;
//! let x = Tensor::new(&[[1f32, -2., 3., -4.], [0.5, 1., -1.5, 2.]], &Device::Cpu)?;
//! opt.backward_step(&layer.forward(&x)?.sqr()?.mean_all()?)?;
//! let weight = &opt.last_report()?.groups[opt.group_of("fc.weight").unwrap()];
//! assert_eq!((weight.len, weight.target), (4, 2)); // 2 of its 4 entries updated
//! assert!(weight.kept >= 2); // more only on a tie at the threshold
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - **Vars and names.** `new` takes `&VarMap` (vars named and ordered by their VarMap names),
//!   `(name, Var)` pairs (your order), or `varmap.all_vars()` (unnamed: they are called `#0`,
//!   `#1`, ... in the VarMap's hash order, which changes between processes, so such an optimizer
//!   cannot save checkpoints). Names drive the layer grouping ([`llama_layer`] by default, or
//!   [`Config::with_layers`]), dense and frozen vars, [`GmtAdamW::group_of`] and checkpoints.
//! - **Devices and dtypes.** Every var on one device and of one dtype: f32 (f32 AdamW) or bf16
//!   (f32 master weights kept by the optimizer, each var its master rounded to nearest). On the
//!   CPU the crate's [`crate::GmtAdamW`] steps the vars in place, inside candle's storage (see
//!   `host`); on candle's CUDA backend (feature `cuda`), [`crate::cuda::CudaGmtAdamW`] steps
//!   candle's device buffers in place on candle's stream, with no copy to the host (`device`).
//! - **What is copied.** Nothing, for contiguous gradients (candle's backward makes them so): the
//!   engine reads each gradient where candle left it and writes each var in its own buffer. A
//!   non-contiguous gradient is made contiguous first (one copy of it; [`GmtAdamW::copies`]
//!   counts them).
//! - **A missing gradient** (a var the loss does not depend on, absent from the `GradStore`)
//!   means, as in PyTorch: that var is left untouched by the step (its value, m and v), as a
//!   frozen var is. Its entries still count in its selection group as zeros, which rank last: under
//!   `Scope::PerTensor` that changes nothing for the other vars; under a layer or global scope the
//!   group's kept target counts them. The report's counts include them. One difference from
//!   PyTorch: the step counter behind the bias correction is the optimizer's, not each var's, so a
//!   var that missed steps later steps with the optimizer's count.
//! - **Accumulation.** GMT masks the gradient accumulated over N micro-batches:
//!   [`GmtAdamW::accumulate`] adds a micro-batch's gradients (candle adds, on the vars' device),
//!   [`GmtAdamW::step_accumulated`] steps on the sum. Set `AdamWConfig::grad_scale` to N for the
//!   mean.
//! - **Sharded state (CPU).** [`Config::with_shards`]`(n)` cuts the optimizer's state ZeRO style
//!   over n ranks, as threads joined by a [`crate::ThreadCollective`]: each rank keeps m and v of
//!   its slice of the vars and updates that slice; the all-reduced selection gives every entry
//!   the bits of the unsharded step. Checkpoints are one file per rank (`<path>.rank<r>`); a load
//!   needs the same n. CUDA vars with n > 1 are rejected ([`VarProblem::Device`]).
//! - **Bad input** gets [`Error::Var`] naming the var ([`VarProblem`]: dtype, device, shape, a
//!   gradient of another shape or dtype, shared storage, a checkpoint of other vars) and changes
//!   nothing.

mod access;
mod checkpoint;
mod config;
#[cfg(feature = "cuda")]
mod device;
mod host;
mod optimizer;
mod ranks;
mod step;
mod vars;

pub use config::{llama_layer, Config};
pub use optimizer::GmtAdamW;
pub use vars::Vars;

use crate::{Error, VarProblem};

/// A candle error as the crate's.
pub(crate) fn candle_err(e: candle_core::Error) -> Error {
    Error::Candle(e.to_string())
}

/// An [`Error::Var`] for `var`.
pub(crate) fn var_err(var: &str, problem: VarProblem) -> Error {
    Error::Var {
        var: var.to_string(),
        problem,
    }
}
