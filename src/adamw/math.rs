//! The AdamW update of one entry, in f32, and the per-step scalars it reads.
//!
//! This is the one place the update formula lives; the CPU engine calls [`masked_update`] for every
//! entry and a CUDA kernel mirrors it line for line. Order of operations (PyTorch's AdamW):
//!
//! ```text
//! g  = g_raw * grad_mul                      // grad_mul = clip_coef / grad_scale
//! g  = keep ? g : 0                          // ZeroGrad; Freeze returns p, m, v unchanged instead
//! m  = beta1 * m + one_minus_beta1 * g
//! v  = beta2 * v + one_minus_beta2 * (g * g)
//! p  = p * decay                             // decay = 1 - lr * weight_decay
//! p  = p - step_size * (m / (sqrt(v) * inv_sqrt_bc2 + eps))
//!                                            // step_size = lr / (1 - beta1^t)
//!                                            // inv_sqrt_bc2 = 1 / sqrt(1 - beta2^t)
//! ```
//!
//! Each line is rounded to f32 separately, with no fused multiply-add: a CUDA kernel that must
//! match bit for bit is compiled with `--fmad=false` (or uses `__fmul_rn`/`__fadd_rn`).

use half::bf16;

use super::AdamWConfig;
use crate::MaskedUpdate;

/// The scalars of one step, computed on the host in f64 and rounded once to f32. `repr(C)` so a
/// kernel can take the same struct by value.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepScalars {
    /// Multiplies every raw gradient: `clip_coef / grad_scale`.
    pub grad_mul: f32,
    pub beta1: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    /// `1 - lr * weight_decay`.
    pub decay: f32,
    /// `lr / (1 - beta1^t)`.
    pub step_size: f32,
    /// `1 / sqrt(1 - beta2^t)`.
    pub inv_sqrt_bc2: f32,
    pub eps: f32,
}

impl StepScalars {
    /// The scalars of step `step` (1-based) at learning rate `lr`, with raw gradients multiplied
    /// by `grad_mul`.
    /// [`AdamWConfig::validate`] and [`AdamWConfig::validate_step`] check that every field is
    /// finite, and usable, in f32.
    pub fn new(config: &AdamWConfig, step: u64, lr: f64, grad_mul: f64) -> Self {
        let bias2 = 1.0 - config.beta2.powf(step as f64);
        StepScalars {
            grad_mul: grad_mul as f32,
            beta1: config.beta1 as f32,
            one_minus_beta1: (1.0 - config.beta1) as f32,
            beta2: config.beta2 as f32,
            one_minus_beta2: (1.0 - config.beta2) as f32,
            decay: decay(config, lr) as f32,
            step_size: step_size(config, step, lr) as f32,
            inv_sqrt_bc2: (1.0 / bias2.sqrt()) as f32,
            eps: config.eps as f32,
        }
    }
}

/// `lr / (1 - beta1^step)`, in f64 (the step's `step_size` before rounding).
pub(crate) fn step_size(config: &AdamWConfig, step: u64, lr: f64) -> f64 {
    lr / (1.0 - config.beta1.powf(step as f64))
}

/// `1 - lr * weight_decay`, in f64 (the step's `decay` before rounding).
pub(crate) fn decay(config: &AdamWConfig, lr: f64) -> f64 {
    1.0 - lr * config.weight_decay
}

/// The gradient multiplier of a step: `clip_coef / grad_scale`, where the norm of the unscaled
/// gradient is `sqrt(sum_sq) / grad_scale` and `clip_coef = min(1, max_grad_norm / (norm + 1e-6))`
/// (PyTorch's `clip_grad_norm_`). Returns `(grad_mul, norm)`.
pub fn grad_multiplier(config: &AdamWConfig, sum_sq: f64) -> (f64, f64) {
    let scale = config.grad_scale.unwrap_or(1.0);
    let norm = sum_sq.sqrt() / scale;
    let clip = match config.max_grad_norm {
        Some(max) => (max / (norm + 1e-6)).min(1.0),
        None => 1.0,
    };
    (clip / scale, norm)
}

/// Plain AdamW on one entry: returns the new `(p, m, v)` for the (already scaled) gradient `g`.
#[inline(always)]
pub fn adamw_update(p: f32, m: f32, v: f32, g: f32, s: &StepScalars) -> (f32, f32, f32) {
    let m = s.beta1 * m + s.one_minus_beta1 * g;
    let v = s.beta2 * v + s.one_minus_beta2 * (g * g);
    let p = p * s.decay;
    let p = p - s.step_size * (m / (v.sqrt() * s.inv_sqrt_bc2 + s.eps));
    (p, m, v)
}

/// The masked update of one entry with raw gradient `g_raw`: scales it, then applies
/// [`adamw_update`] (`keep`), the update with g = 0 (`!keep`, `ZeroGrad`) or nothing (`!keep`,
/// `Freeze`). Written with selects rather than branches so that the loop around it vectorizes.
#[inline(always)]
pub fn masked_update(
    p: f32,
    m: f32,
    v: f32,
    g_raw: f32,
    keep: bool,
    masked: MaskedUpdate,
    s: &StepScalars,
) -> (f32, f32, f32) {
    let g = select(keep, g_raw * s.grad_mul, 0.0);
    let (p_new, m_new, v_new) = adamw_update(p, m, v, g, s);
    let write = keep || masked == MaskedUpdate::ZeroGrad;
    (
        select(write, p_new, p),
        select(write, m_new, m),
        select(write, v_new, v),
    )
}

/// `x` rounded to the nearest bf16, ties to even; NaN stays NaN (quiet). The same bits as
/// `half::bf16::from_f32`, written without branches so the update loop vectorizes:
/// `(bits + 0x7FFF + ((bits >> 16) & 1)) >> 16`.
#[inline(always)]
pub fn bf16_round_nearest(x: f32) -> bf16 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16;
    let quiet_nan = (bits >> 16) | 0x0040;
    bf16::from_bits(if x.is_nan() { quiet_nan } else { rounded } as u16)
}

/// `new` where `write`, else `old`, as a bit select (no branch).
#[inline(always)]
pub fn select(write: bool, new: f32, old: f32) -> f32 {
    let mask = u32::from(write).wrapping_neg();
    f32::from_bits((new.to_bits() & mask) | (old.to_bits() & !mask))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_nearest_matches_half() {
        let edges = [
            0u32,
            0x8000,
            0x8001,
            0x1_8000,
            0x7F7F_FFFF,
            0x7F80_0000,
            0x7FC0_0001,
            0xFF80_0001,
            0x8000_8000,
            0xFFFF_FFFF,
        ];
        let sweep = (0..u32::MAX / 7919).map(|i| i * 7919);
        for bits in edges.into_iter().chain(sweep) {
            let x = f32::from_bits(bits);
            assert_eq!(
                bf16_round_nearest(x).to_bits(),
                bf16::from_f32(x).to_bits(),
                "{bits:#x}"
            );
        }
    }

    #[test]
    fn first_step_moves_by_lr_times_sign() {
        // At t = 1 with m = v = 0, the bias-corrected step is lr * g / (|g| + eps') = lr * sign(g).
        let config = AdamWConfig::default();
        let s = StepScalars::new(&config, 1, 1e-3, 1.0);
        let (p, m, v) = adamw_update(1.0, 0.0, 0.0, 0.5, &s);
        assert!((p - (1.0 - 1e-3)).abs() < 1e-6, "{p}");
        assert!((m - 0.05).abs() < 1e-8 && (v - 0.00025).abs() < 1e-10);
    }

    #[test]
    fn masked_entries_follow_their_mode() {
        let s = StepScalars::new(&AdamWConfig::default(), 3, 1e-3, 1.0);
        let zero = adamw_update(0.5, 0.1, 0.01, 0.0, &s);
        assert_eq!(
            masked_update(0.5, 0.1, 0.01, 7.0, false, MaskedUpdate::ZeroGrad, &s),
            zero
        );
        assert_eq!(
            masked_update(0.5, 0.1, 0.01, 7.0, false, MaskedUpdate::Freeze, &s),
            (0.5, 0.1, 0.01)
        );
        let kept = adamw_update(0.5, 0.1, 0.01, 7.0, &s);
        assert_eq!(
            masked_update(0.5, 0.1, 0.01, 7.0, true, MaskedUpdate::Freeze, &s),
            kept
        );
    }

    #[test]
    fn clipping_scales_down_only() {
        let config = AdamWConfig {
            grad_scale: Some(4.0),
            max_grad_norm: Some(1.0),
            ..AdamWConfig::default()
        };
        let (mul, norm) = grad_multiplier(&config, 64.0); // raw norm 8, unscaled 2
        assert_eq!(norm, 2.0);
        assert!((mul - 1.0 / (2.0 + 1e-6) / 4.0).abs() < 1e-15);
        let (mul, norm) = grad_multiplier(&config, 1.0); // unscaled 0.25: no clipping
        assert_eq!((mul, norm), (0.25, 0.25));
    }
}
