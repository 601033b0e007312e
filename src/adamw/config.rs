//! `AdamWConfig`, `MaskMode` and `StepReport`: what the optimizer is told and what it tells back.

use crate::{Error, GroupStats, Result};

/// AdamW hyper-parameters, PyTorch semantics (decoupled weight decay, bias correction). The learning
/// rate is passed to every step: schedules belong to the trainer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// First-moment decay, in [0, 1).
    pub beta1: f64,
    /// Second-moment decay, in [0, 1).
    pub beta2: f64,
    /// Added to the denominator, > 0.
    pub eps: f64,
    /// Decoupled weight decay, >= 0: `p -= lr * weight_decay * p`.
    pub weight_decay: f64,
    /// Gradients are divided by this (the AMP loss scale, or the accumulation count), > 0.
    pub grad_scale: Option<f64>,
    /// Clip by the global L2 norm of the (unscaled, unmasked) gradient, > 0. The norm comes from the
    /// selection pass's sum of squares, so clipping costs no extra pass.
    pub max_grad_norm: Option<f64>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            grad_scale: None,
            max_grad_norm: None,
        }
    }
}

impl AdamWConfig {
    /// Checks every field against its domain.
    pub fn validate(&self) -> Result<()> {
        let unit = "a number in [0, 1)";
        check("beta1", self.beta1, (0.0..1.0).contains(&self.beta1), unit)?;
        check("beta2", self.beta2, (0.0..1.0).contains(&self.beta2), unit)?;
        let positive = "a finite number > 0";
        check(
            "eps",
            self.eps,
            self.eps.is_finite() && self.eps > 0.0,
            positive,
        )?;
        let wd = self.weight_decay;
        check(
            "weight_decay",
            wd,
            wd.is_finite() && wd >= 0.0,
            "a finite number >= 0",
        )?;
        if let Some(s) = self.grad_scale {
            check("grad_scale", s, s.is_finite() && s > 0.0, positive)?;
        }
        if let Some(n) = self.max_grad_norm {
            check("max_grad_norm", n, n.is_finite() && n > 0.0, positive)?;
        }
        Ok(())
    }
}

/// Checks a learning rate: finite and >= 0.
pub fn validate_lr(lr: f64) -> Result<()> {
    check(
        "lr",
        lr,
        lr.is_finite() && lr >= 0.0,
        "a finite number >= 0",
    )
}

fn check(name: &'static str, value: f64, ok: bool, expected: &'static str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidConfig {
            name,
            value,
            expected,
        })
    }
}

/// How the entries to mask are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaskMode {
    /// GMT: per group, mask the entries with the smallest |g| (exact radix select).
    #[default]
    Gmt,
    /// The random-mask baseline at the same ratio: an entry is kept when its counter-based draw
    /// `rng::mix(seed, step, global index)` clears [`rng::random_cut`](crate::rng::random_cut), so
    /// the CPU and the GPU choose the same entries for the same seed and step.
    Random { seed: u64 },
}

/// What one step did.
///
/// `groups` has one entry per selection group of the [`MaskConfig`](crate::MaskConfig)'s scope:
/// - GMT: the selection's stats (threshold, kept, len, sum of squares, non-finite count);
/// - `mask_ratio = 0` (no selection runs): threshold 0, every entry kept;
/// - random mask: `kept` is the number of entries the draw kept, `target` the expected count,
///   `threshold` is NaN and `threshold_key` 0 (there is no magnitude threshold).
///
/// Fixed-frozen tensors (see `set_frozen`) still count in the selection and the norm; they are
/// only left out of the update.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// True when a gradient entry was Inf or NaN: nothing changed, the step counter included.
    pub skipped: bool,
    /// The step counter after this call (unchanged when skipped).
    pub step: u64,
    /// Per selection group.
    pub groups: Vec<GroupStats>,
    /// The global L2 norm of the gradient after dividing by `grad_scale`, before clipping and
    /// masking (Inf or NaN when skipped).
    pub grad_norm: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_pytorchs() {
        let c = AdamWConfig::default();
        assert_eq!(
            (c.beta1, c.beta2, c.eps, c.weight_decay),
            (0.9, 0.999, 1e-8, 0.0)
        );
        assert!(c.validate().is_ok());
    }

    #[test]
    fn each_field_is_checked() {
        let ok = AdamWConfig::default();
        let bad = [
            AdamWConfig { beta1: 1.0, ..ok },
            AdamWConfig { beta1: -0.1, ..ok },
            AdamWConfig {
                beta2: f64::NAN,
                ..ok
            },
            AdamWConfig { eps: 0.0, ..ok },
            AdamWConfig {
                eps: f64::INFINITY,
                ..ok
            },
            AdamWConfig {
                weight_decay: -1e-3,
                ..ok
            },
            AdamWConfig {
                grad_scale: Some(0.0),
                ..ok
            },
            AdamWConfig {
                max_grad_norm: Some(f64::NAN),
                ..ok
            },
        ];
        for c in bad {
            assert!(
                matches!(c.validate(), Err(Error::InvalidConfig { .. })),
                "{c:?}"
            );
        }
        assert!(validate_lr(0.0).is_ok());
        for lr in [-1e-9, f64::NAN, f64::INFINITY] {
            assert!(validate_lr(lr).is_err());
        }
    }
}
