//! The adapter to the crate's optimizer: the only file that builds one. Every method (SFT, GMT,
//! random mask, HFT, one-off drop) steps through here, so the example has no second optimizer.
//!
//! Two backends with one interface: on the CPU the crate's `GmtAdamW` steps host copies of the
//! weights and gradients; on a CUDA device (`--features cuda`) `CudaGmtAdamW` steps candle's own
//! device buffers in place (`gpu.rs`), with no copy to the host. The training loop zeroes,
//! accumulates, steps and saves without knowing which.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::backprop::GradStore;
use gradmask::{GroupStats, MaskConfig, TensorTable};

pub use gradmask::{AdamWConfig, GmtAdamW, MaskMode, MaskStability, StepReport};

use crate::model::Llama;
use crate::shards::ShardedHost;
use crate::train::{host_params, set_params};

/// What the optimizer is built with for one method.
#[derive(Debug, Clone)]
pub struct OptimSpec {
    pub adamw: AdamWConfig,
    pub mask: MaskConfig,
    pub mode: MaskMode,
    /// HFT: tensors left out of every update.
    pub frozen: Option<Vec<bool>>,
    /// Track mask stability (CPU only so far; see `Optimizer::stability`).
    pub track_stability: bool,
    /// CPU ranks (threads) the optimizer's state is sharded over (`shards.rs`); 1: unsharded.
    pub shards: usize,
}

/// The host optimizer: one `GmtAdamW`, or N sharded ranks (`--shards`).
enum Inner {
    One(Box<GmtAdamW>),
    Sharded(Box<ShardedHost>),
}

pub struct Optimizer {
    backend: Backend,
}

enum Backend {
    /// Host copies of the weights (the optimizer's truth, written back to the model after each
    /// step) and of the accumulated gradients.
    Host {
        inner: Inner,
        params: Vec<Vec<f32>>,
        grads: Vec<Vec<f32>>,
    },
    #[cfg(feature = "cuda")]
    Device(Box<crate::gpu::DeviceOptimizer>),
}

/// The crate's table for the model's parameters, in parameter order: one group per transformer
/// block for `Scope::Groups`, the embeddings and final norm in group 0.
pub fn table(model: &Llama) -> Result<TensorTable> {
    let lengths: Vec<usize> = model.params.iter().map(|p| p.var.elem_count()).collect();
    let groups: Vec<u32> = model
        .params
        .iter()
        .map(|p| p.layer.map_or(0, |l| l as u32 + 1))
        .collect();
    Ok(TensorTable::new(&lengths, &groups)?)
}

impl Optimizer {
    /// An optimizer for `model`'s parameters on the model's device.
    pub fn new(model: &Llama, spec: &OptimSpec) -> Result<Self> {
        let table = table(model)?;
        #[cfg(feature = "cuda")]
        if model.device.is_cuda() {
            anyhow::ensure!(spec.shards <= 1, "--shards runs its ranks on the CPU only");
            let device = crate::gpu::DeviceOptimizer::new(model, table, spec)?;
            return Ok(Optimizer {
                backend: Backend::Device(Box::new(device)),
            });
        }
        let lengths = table.lengths().to_vec();
        let inner = if spec.shards > 1 {
            Inner::Sharded(Box::new(ShardedHost::new(&table, spec, spec.shards)?))
        } else {
            let mut one = GmtAdamW::new(table, spec.adamw, spec.mask)?.with_mask_mode(spec.mode);
            if let Some(frozen) = &spec.frozen {
                one.set_frozen(frozen)?;
            }
            one.track_stability(spec.track_stability);
            Inner::One(Box::new(one))
        };
        Ok(Optimizer {
            backend: Backend::Host {
                inner,
                params: host_params(model)?,
                grads: lengths.iter().map(|&n| vec![0.0; n]).collect(),
            },
        })
    }

    /// Starts a new accumulation window.
    pub fn zero_grads(&mut self) {
        match &mut self.backend {
            Backend::Host { grads, .. } => grads.iter_mut().for_each(|g| g.fill(0.0)),
            #[cfg(feature = "cuda")]
            Backend::Device(device) => device.zero_grads(),
        }
    }

    /// Adds one micro-batch's gradients (a parameter without one counts as zero).
    pub fn accumulate(&mut self, model: &Llama, store: &GradStore) -> Result<()> {
        match &mut self.backend {
            Backend::Host { grads, .. } => {
                for (param, acc) in model.params.iter().zip(grads.iter_mut()) {
                    if let Some(g) = store.get(param.var.as_tensor()) {
                        let g = g.flatten_all()?.to_vec1::<f32>()?;
                        acc.iter_mut().zip(&g).for_each(|(a, g)| *a += g);
                    }
                }
                Ok(())
            }
            #[cfg(feature = "cuda")]
            Backend::Device(device) => device.accumulate(model, store),
        }
    }

    /// One masked AdamW step on the accumulated gradients; the model holds the new weights after.
    pub fn step(&mut self, model: &Llama, lr: f64) -> Result<StepReport> {
        match &mut self.backend {
            Backend::Host {
                inner,
                params,
                grads,
            } => {
                let report = match inner {
                    Inner::One(one) => {
                        let mut p: Vec<&mut [f32]> =
                            params.iter_mut().map(|p| p.as_mut_slice()).collect();
                        let g: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
                        one.step(&mut p, &g, lr)?
                    }
                    Inner::Sharded(ranks) => ranks.step(params, grads, lr)?,
                };
                set_params(model, params)?;
                Ok(report)
            }
            #[cfg(feature = "cuda")]
            Backend::Device(device) => device.step(model, lr),
        }
    }

    /// How many entries of tensor `index`'s accumulated gradient pass `stats`' threshold.
    pub fn count_kept(&self, index: usize, stats: &GroupStats) -> Result<u64> {
        match &self.backend {
            Backend::Host { grads, .. } => Ok(grads[index]
                .iter()
                .filter(|g| stats.keeps_key(g.to_bits() & 0x7fff_ffff))
                .count() as u64),
            #[cfg(feature = "cuda")]
            Backend::Device(device) => device.count_kept(index, stats),
        }
    }

    /// The mask stability of the last step taken, when tracked (the CUDA optimizer does not track
    /// it yet: `None` there).
    pub fn stability(&self) -> Option<&MaskStability> {
        match &self.backend {
            Backend::Host {
                inner: Inner::One(one),
                ..
            } => one.stability(),
            Backend::Host {
                inner: Inner::Sharded(ranks),
                ..
            } => ranks.stability(),
            #[cfg(feature = "cuda")]
            Backend::Device(_) => None,
        }
    }

    /// The current weights on the host, in parameter order.
    pub fn params(&self) -> Result<Vec<Vec<f32>>> {
        match &self.backend {
            Backend::Host { params, .. } => Ok(params.clone()),
            #[cfg(feature = "cuda")]
            Backend::Device(device) => device.params(),
        }
    }

    /// Replaces the weights (of the model and of the optimizer's copy).
    pub fn set_params(&mut self, model: &Llama, host: Vec<Vec<f32>>) -> Result<()> {
        set_params(model, &host)?;
        match &mut self.backend {
            Backend::Host { params, .. } => *params = host,
            #[cfg(feature = "cuda")]
            Backend::Device(_) => {} // the model's buffers are the optimizer's
        }
        Ok(())
    }

    /// Steps taken (skipped steps do not count).
    pub fn step_count(&mut self) -> Result<u64> {
        match &mut self.backend {
            Backend::Host {
                inner: Inner::One(one),
                ..
            } => Ok(one.step_count()),
            Backend::Host {
                inner: Inner::Sharded(ranks),
                ..
            } => Ok(ranks.step_count()),
            #[cfg(feature = "cuda")]
            Backend::Device(device) => device.step_count(),
        }
    }

    pub fn save(&mut self, path: &Path) -> Result<()> {
        let saved = match &mut self.backend {
            Backend::Host {
                inner: Inner::One(one),
                ..
            } => one.save(path).map_err(anyhow::Error::from),
            Backend::Host {
                inner: Inner::Sharded(ranks),
                ..
            } => ranks.save(path),
            #[cfg(feature = "cuda")]
            Backend::Device(device) => device.save(path).map_err(anyhow::Error::from),
        };
        saved.with_context(|| format!("saving optimizer state to {}", path.display()))
    }

    pub fn load(&mut self, path: &Path) -> Result<()> {
        let loaded = match &mut self.backend {
            Backend::Host {
                inner: Inner::One(one),
                ..
            } => one.load(path).map_err(anyhow::Error::from),
            Backend::Host {
                inner: Inner::Sharded(ranks),
                ..
            } => ranks.load(path),
            #[cfg(feature = "cuda")]
            Backend::Device(device) => device.load(path).map_err(anyhow::Error::from),
        };
        loaded.with_context(|| format!("loading optimizer state from {}", path.display()))
    }
}
