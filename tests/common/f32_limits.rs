//! Hyper-parameters inside their f64 domains that the f32 arithmetic of the update cannot use
//! (issue 11). The CPU and the CUDA optimizer tests share these lists, so both engines are held to
//! rejecting the same values with the same error.

use gradmask::{AdamWConfig, Error};

/// A config each engine must reject, the quantity its error names and that quantity as f32.
pub fn unusable_configs() -> Vec<(AdamWConfig, &'static str, f32)> {
    let ok = AdamWConfig::default();
    let with = |config: AdamWConfig, name, value: f64| (config, name, value as f32);
    vec![
        // The case: 0 in f32, so one step with a zero gradient gives 0 / 0 = NaN.
        with(AdamWConfig { eps: 1e-50, ..ok }, "eps", 1e-50),
        with(AdamWConfig { eps: 1e-40, ..ok }, "eps", 1e-40), // subnormal: 0 under FTZ/DAZ
        with(AdamWConfig { eps: 1e39, ..ok }, "eps", 1e39),   // Inf
        with(
            AdamWConfig {
                beta1: 1.0 - 1e-9,
                ..ok
            },
            "beta1",
            1.0 - 1e-9,
        ),
        with(
            AdamWConfig {
                beta2: 1.0 - 2f64.powi(-25), // the midpoint below 1 rounds to even: 1.0
                ..ok
            },
            "beta2",
            1.0,
        ),
        with(AdamWConfig { beta2: 1e-45, ..ok }, "beta2", 1e-45),
        with(
            AdamWConfig {
                weight_decay: 1e39,
                ..ok
            },
            "weight_decay",
            1e39,
        ),
        with(
            AdamWConfig {
                weight_decay: 1e-50,
                ..ok
            },
            "weight_decay",
            1e-50,
        ),
        with(
            AdamWConfig {
                grad_scale: Some(1e-39),
                ..ok
            },
            "grad_scale",
            1e-39,
        ),
        // Normal itself, but the gradient multiplier 1 / grad_scale is subnormal.
        with(
            AdamWConfig {
                grad_scale: Some(1e38),
                ..ok
            },
            "1 / grad_scale",
            1e-38,
        ),
        with(
            AdamWConfig {
                max_grad_norm: Some(1e-39),
                ..ok
            },
            "max_grad_norm",
            1e-39,
        ),
        with(
            AdamWConfig {
                max_grad_norm: Some(1e39),
                ..ok
            },
            "max_grad_norm",
            1e39,
        ),
    ]
}

/// Configs at the edges of f32 that each engine must accept.
pub fn usable_edge_configs() -> Vec<AdamWConfig> {
    let ok = AdamWConfig::default();
    let below_one = 1.0 - 2f64.powi(-24); // the largest f32 below 1
    let smallest = f64::from(f32::MIN_POSITIVE);
    vec![
        AdamWConfig {
            beta1: below_one,
            beta2: 1.0 - 2f64.powi(-25) - 2f64.powi(-53), // just below the midpoint: `below_one`
            eps: smallest,
            weight_decay: 1.0,
            grad_scale: Some(1.0 / smallest),
            max_grad_norm: Some(f64::from(f32::MAX)),
        },
        AdamWConfig {
            beta1: 0.0,
            beta2: 0.0,
            weight_decay: 0.0,
            grad_scale: Some(smallest),
            max_grad_norm: Some(smallest),
            ..ok
        },
    ]
}

/// The config of [`unusable_lrs`]: default betas, and a weight decay large enough for
/// `1 - lr * weight_decay` to overflow f32 while `lr` does not.
pub fn lr_config() -> AdamWConfig {
    AdamWConfig {
        weight_decay: 1e3,
        ..AdamWConfig::default()
    }
}

/// Learning rates that a second step (t = 2) with [`lr_config`] must reject, the quantity the
/// error names and that quantity as f32.
pub fn unusable_lrs() -> Vec<(f64, &'static str, f32)> {
    let bias1 = 1.0 - 0.9f64 * 0.9; // 1 - beta1^2
    vec![
        (1e39, "lr", f32::INFINITY),
        (1e-50, "lr", 0.0),
        (1e-40, "lr", 1e-40),
        (1e38, "lr / (1 - beta1^t)", (1e38 / bias1) as f32), // Inf
        (1e36, "1 - lr * weight_decay", f32::NEG_INFINITY),
    ]
}

/// Whether `err` is the f32 rejection of `name` with f32 value `value_f32` (bit for bit).
pub fn is_f32_rejection(err: &Error, name: &str, value_f32: f32) -> bool {
    matches!(err, Error::InvalidInF32 { name: n, value_f32: v, .. }
        if *n == name && v.to_bits() == value_f32.to_bits())
}
