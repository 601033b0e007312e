//! Steps: on a `GradStore` (the `candle_nn::Optimizer` interface), and on gradients accumulated
//! over micro-batches.

use candle_core::backprop::GradStore;
use candle_core::{DType, Storage, Tensor, Var};
use half::bf16;

use super::config::Config;
use super::optimizer::{Engine, GmtAdamW};
use super::vars::check_grad;
use super::{candle_err, var_err};
use crate::{Result, VarProblem};

impl GmtAdamW {
    /// Adds one micro-batch's gradients to the accumulated sum (candle adds, in the vars' dtype,
    /// on their device). A var without a gradient in `grads` adds nothing. Rejects a gradient of
    /// another shape, dtype or device than its var (naming the var) before adding anything.
    pub fn accumulate(&mut self, grads: &GradStore) -> Result<()> {
        let found = self.lookup(grads)?;
        let mut sums = Vec::with_capacity(found.len());
        for (acc, grad) in self.accumulated.iter().zip(found) {
            sums.push(match (acc, grad) {
                (Some(acc), Some(g)) => Some((acc + &g).map_err(candle_err)?),
                (acc, g) => g.or_else(|| acc.clone()),
            });
        }
        self.accumulated = sums;
        self.micro_batches += 1;
        Ok(())
    }

    /// One step on the gradients accumulated since the last step, then a new accumulation window.
    /// A var that got no gradient in any micro-batch is left untouched (see the module notes).
    /// Rejects a call with no micro-batch accumulated (a step on nothing would still count in the
    /// bias correction). A rejected step (no micro-batch, bad lr, a var whose shape changed, ...)
    /// keeps the accumulated sum and changes nothing.
    pub fn step_accumulated(&mut self) -> Result<()> {
        if self.micro_batches == 0 {
            return Err(crate::Error::InvalidConfig {
                name: "step_accumulated without a micro-batch",
                value: 0.0,
                expected: "accumulate at least one micro-batch's gradients first",
            });
        }
        let grads = self.accumulated.clone();
        self.step_on(&grads)?;
        self.accumulated.iter_mut().for_each(|g| *g = None);
        self.micro_batches = 0;
        Ok(())
    }

    /// Drops the accumulated gradients without stepping.
    pub fn clear_accumulated(&mut self) {
        self.accumulated.iter_mut().for_each(|g| *g = None);
        self.micro_batches = 0;
    }

    /// Each var's gradient in `grads`, checked against the var.
    fn lookup(&self, grads: &GradStore) -> Result<Vec<Option<Tensor>>> {
        let mut found = Vec::with_capacity(self.vars.len());
        for (name, var) in self.names.iter().zip(&self.vars) {
            let grad = grads.get(var.as_tensor()).cloned();
            if let Some(g) = &grad {
                check_grad(name, var, g)?;
            }
            found.push(grad);
        }
        Ok(found)
    }

    /// One step on `grads` (one per var, None for a var without a gradient).
    pub(super) fn step_on(&mut self, grads: &[Option<Tensor>]) -> Result<()> {
        self.check_shapes()?;
        self.check_grads_apart(grads)?;
        let mut ready = Vec::with_capacity(grads.len());
        for ((name, var), grad) in self.names.iter().zip(&self.vars).zip(grads) {
            ready.push(match grad {
                Some(g) => {
                    check_grad(name, var, g)?;
                    if g.layout().is_contiguous() {
                        Some(g.clone())
                    } else {
                        self.copies += 1;
                        Some(g.contiguous().map_err(candle_err)?)
                    }
                }
                None => None,
            });
        }
        let (vars, names, frozen, lr) = (&self.vars, &self.names, &self.frozen, self.lr);
        match (&mut self.engine, self.dtype) {
            (Engine::Host(host), DType::BF16) => host.step::<bf16>(vars, names, &ready, frozen, lr),
            (Engine::Host(host), _) => host.step::<f32>(vars, names, &ready, frozen, lr),
            #[cfg(feature = "cuda")]
            (Engine::Device(device), DType::BF16) => {
                device.step::<bf16>(vars, names, &ready, frozen, lr)
            }
            #[cfg(feature = "cuda")]
            (Engine::Device(device), _) => device.step::<f32>(vars, names, &ready, frozen, lr),
        }
    }
}

impl GmtAdamW {
    /// Rejects a gradient held in a var's own storage. The engines' address check catches it for
    /// a non-empty var; an empty one takes no memory, but the step's read guard on the gradient
    /// would block the var's write lock.
    fn check_grads_apart(&self, grads: &[Option<Tensor>]) -> Result<()> {
        let storage = |t: &Tensor| &*t.storage_and_layout().0 as *const Storage as usize;
        let vars: std::collections::HashMap<usize, usize> = (self.vars.iter().enumerate())
            .map(|(i, v)| (storage(v.as_tensor()), i))
            .collect();
        for (name, grad) in self.names.iter().zip(grads) {
            if let Some(&j) = grad.as_ref().and_then(|g| vars.get(&storage(g))) {
                let other = format!(
                    "its gradient, which is the storage of var {}",
                    self.names[j]
                );
                return Err(var_err(name, VarProblem::Shared { other }));
            }
        }
        Ok(())
    }
}

impl candle_nn::Optimizer for GmtAdamW {
    type Config = Config;

    fn new(vars: Vec<Var>, config: Config) -> candle_core::Result<Self> {
        Ok(GmtAdamW::with_config(vars, config)?)
    }

    /// One step on `grads`, on the vars' device; on a CUDA device it returns once the step is
    /// enqueued ([`GmtAdamW::last_report`] waits for it).
    fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        let grads = self.lookup(grads)?;
        Ok(self.step_on(&grads)?)
    }

    fn learning_rate(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate of the next steps (checked when a step takes it).
    fn set_learning_rate(&mut self, lr: f64) {
        self.lr = lr;
    }
}

/// So that `?` carries the crate's errors in functions returning candle's `Result` (candle's
/// `Error::Wrapped`; downcast to get the [`crate::Error`] back).
impl From<crate::Error> for candle_core::Error {
    fn from(e: crate::Error) -> Self {
        candle_core::Error::wrap(e)
    }
}
