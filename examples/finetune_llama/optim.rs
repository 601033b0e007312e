//! The adapter to the crate's optimizer, `GmtAdamW`: the only file that calls it. Every method
//! (SFT, GMT, random mask, HFT, one-off drop) steps through here, so the example has no second
//! optimizer.
//!
//! It is a thin layer: host buffers in and out, one `TensorTable` built from the model's
//! parameter order, and errors with context.

use std::path::Path;

use anyhow::{Context, Result};
use gradmask::{MaskConfig, TensorTable};

pub use gradmask::{AdamWConfig, GmtAdamW, MaskMode, StepReport};

/// What the optimizer is built with for one method.
#[derive(Debug, Clone)]
pub struct OptimSpec {
    pub adamw: AdamWConfig,
    pub mask: MaskConfig,
    pub mode: MaskMode,
    /// HFT: tensors left out of every update.
    pub frozen: Option<Vec<bool>>,
}

pub struct Optimizer {
    inner: GmtAdamW,
}

impl Optimizer {
    /// `lengths` and `group_ids` follow the model's parameter order (group ids matter for
    /// `Scope::Groups`: one group per transformer block).
    pub fn new(lengths: &[usize], group_ids: &[u32], spec: &OptimSpec) -> Result<Self> {
        let table = TensorTable::new(lengths, group_ids)?;
        let mut inner = GmtAdamW::new(table, spec.adamw, spec.mask)?.with_mask_mode(spec.mode);
        if let Some(frozen) = &spec.frozen {
            inner.set_frozen(frozen)?;
        }
        Ok(Optimizer { inner })
    }

    /// One masked AdamW step on host buffers.
    pub fn step(
        &mut self,
        params: &mut [Vec<f32>],
        grads: &[Vec<f32>],
        lr: f64,
    ) -> Result<StepReport> {
        let mut params: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
        let grads: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
        Ok(self.inner.step(&mut params, &grads, lr)?)
    }

    pub fn step_count(&self) -> u64 {
        self.inner.step_count()
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path)
            .with_context(|| format!("saving optimizer state to {}", path.display()))
    }

    pub fn load(&mut self, path: &Path) -> Result<()> {
        self.inner
            .load(path)
            .with_context(|| format!("loading optimizer state from {}", path.display()))
    }
}
