//! `AdamWConfig`, `MaskMode` and `StepReport`: what the optimizer is told and what it tells back.

use super::math::{decay, step_size};
use crate::{Error, GroupStats, Result};

/// AdamW hyper-parameters, PyTorch semantics (decoupled weight decay, bias correction). The learning
/// rate is passed to every step: schedules belong to the trainer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// First-moment decay, in [0, 1), and below 1 in f32 (at most 1 - 2^-24).
    pub beta1: f64,
    /// Second-moment decay, in [0, 1), and below 1 in f32 (at most 1 - 2^-24).
    pub beta2: f64,
    /// Added to the denominator, > 0: a normal f32 (at least 1.2e-38, which FTZ/DAZ keep).
    pub eps: f64,
    /// Decoupled weight decay, >= 0: `p -= lr * weight_decay * p`.
    pub weight_decay: f64,
    /// Gradients are divided by this (the AMP loss scale, or the accumulation count), > 0; it and
    /// its reciprocal must be normal f32 numbers.
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
    /// Checks every field against its domain ([`Error::InvalidConfig`]), then in f32, the
    /// precision the update computes in ([`Error::InvalidInF32`]): `eps`, `max_grad_norm` and
    /// `1 / grad_scale` (the gradient multiplier) must be normal f32 numbers, and the betas and
    /// `weight_decay` too unless they are exactly 0; the betas must stay below 1 (any beta from
    /// `1 - 2^-25` up rounds to 1.0f32).
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
        for (name, beta) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            let beta32 = check_f32(name, beta, true)?;
            if beta32 >= 1.0 {
                return Err(Error::InvalidInF32 {
                    name,
                    value: beta,
                    value_f32: beta32,
                    expected: "below 1 in f32: at most 1 - 2^-24 (0.99999994)",
                });
            }
        }
        check_f32("eps", self.eps, false)?;
        check_f32("weight_decay", wd, true)?;
        if let Some(s) = self.grad_scale {
            check_f32("grad_scale", s, false)?;
            check_f32("1 / grad_scale", 1.0 / s, false)?;
        }
        if let Some(n) = self.max_grad_norm {
            check_f32("max_grad_norm", n, false)?;
        }
        Ok(())
    }

    /// Checks the learning rate of step `step` (1-based: the step about to be taken) with this
    /// config: `lr` itself as [`validate_lr`] does, then the f32 scalars the update derives from
    /// it, `lr / (1 - beta1^step)` and `1 - lr * weight_decay`, which must be finite. Both
    /// optimizers call it before they touch anything.
    pub fn validate_step(&self, step: u64, lr: f64) -> Result<()> {
        validate_lr(lr)?;
        for (name, value) in [
            ("lr / (1 - beta1^t)", step_size(self, step, lr)),
            ("1 - lr * weight_decay", decay(self, lr)),
        ] {
            if !(value as f32).is_finite() {
                return Err(Error::InvalidInF32 {
                    name,
                    value,
                    value_f32: value as f32,
                    expected: "finite in f32: lower the learning rate",
                });
            }
        }
        Ok(())
    }
}

/// Checks a learning rate: finite and >= 0, and in f32 (the precision of the update) 0 or a
/// normal number (a positive lr that rounds to 0 or a subnormal is rejected: pass 0 for no step).
pub fn validate_lr(lr: f64) -> Result<()> {
    check(
        "lr",
        lr,
        lr.is_finite() && lr >= 0.0,
        "a finite number >= 0",
    )?;
    check_f32("lr", lr, true).map(|_| ())
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

/// Checks a value already inside its domain once it is converted to f32: a normal number, or 0
/// when `zero_ok` and the value is exactly 0. Returns the f32 value.
fn check_f32(name: &'static str, value: f64, zero_ok: bool) -> Result<f32> {
    let value_f32 = value as f32;
    if value_f32.is_normal() || (zero_ok && value == 0.0) {
        return Ok(value_f32);
    }
    Err(Error::InvalidInF32 {
        name,
        value,
        value_f32,
        expected: if zero_ok {
            "exactly 0, or a normal f32 (from 1.2e-38 to 3.4e38)"
        } else {
            "a normal f32 (from 1.2e-38 to 3.4e38)"
        },
    })
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
