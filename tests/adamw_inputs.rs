//! A non-finite gradient skips the step with every bit of state kept; bad inputs get typed errors
//! and change nothing.

mod common;

use common::adamw_ref::{draw_grads, draw_params, state, views, views_mut};
use common::f32_limits::usable_edge_configs;
use common::f32_limits::{is_f32_rejection, lr_config, unusable_configs, unusable_lrs};
use common::Dist;
use gradmask::{
    AdamWConfig, Error, GmtAdamW, MaskConfig, MaskMode, MaskedUpdate, Scope, StepReport,
    TensorTable,
};
use half::bf16;

const LENGTHS: [usize; 5] = [1, 3, 0, 1001, 70_001];

fn table() -> TensorTable {
    TensorTable::per_tensor(&LENGTHS)
        .unwrap()
        .with_dense(&[false, false, false, false, true])
        .unwrap()
}

fn optimizer(ratio: f64, mode: MaskMode) -> GmtAdamW {
    let config = AdamWConfig {
        weight_decay: 0.01,
        max_grad_norm: Some(1.0),
        ..AdamWConfig::default()
    };
    let mask = MaskConfig {
        mask_ratio: ratio,
        scope: Scope::Global,
        masked: MaskedUpdate::ZeroGrad,
    };
    GmtAdamW::new(table(), config, mask)
        .unwrap()
        .with_mask_mode(mode)
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    F32,
    F32Bf16Grads,
    Master,
    Stochastic,
}

/// One step of `kind`, with f32 parameters kept as f32 and bf16 ones rounded from them.
fn step(
    opt: &mut GmtAdamW,
    kind: Kind,
    params: &mut Vec<Vec<f32>>,
    grads: &[Vec<f32>],
) -> Result<StepReport, Error> {
    let to_bf16 = |v: &[Vec<f32>]| -> Vec<Vec<bf16>> {
        v.iter()
            .map(|t| t.iter().map(|&x| bf16::from_f32(x)).collect())
            .collect()
    };
    let (bf16_grads, mut bf16_params) = (to_bf16(grads), to_bf16(params));
    let result = match kind {
        Kind::F32 => opt.step(&mut views_mut(params), &views(grads), 1e-3),
        Kind::F32Bf16Grads => opt.step(&mut views_mut(params), &views(&bf16_grads), 1e-3),
        Kind::Master => {
            opt.step_bf16_master(&mut views_mut(&mut bf16_params), &views(&bf16_grads), 1e-3)
        }
        Kind::Stochastic => opt.step_bf16_stochastic(
            &mut views_mut(&mut bf16_params),
            &views(&bf16_grads),
            1e-3,
            5,
        ),
    };
    if matches!(kind, Kind::Master | Kind::Stochastic) {
        *params = bf16_params
            .iter()
            .map(|t| t.iter().map(|x| x.to_f32()).collect())
            .collect();
    }
    result
}

#[test]
fn a_non_finite_gradient_anywhere_skips_the_step() {
    let kinds = [
        Kind::F32,
        Kind::F32Bf16Grads,
        Kind::Master,
        Kind::Stochastic,
    ];
    let modes = [
        (0.0, MaskMode::Gmt),
        (0.5, MaskMode::Gmt),
        (0.5, MaskMode::Random { seed: 9 }),
    ];
    let poisons = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
    // (tensor, entry): the first entry, the last entry of a large tensor, a dense tensor.
    let places = [(0, 0), (3, 1000), (4, 70_000)];
    for kind in kinds {
        for (ratio, mode) in modes {
            for (n, (poison, (tensor, entry))) in poisons.iter().zip(places).enumerate() {
                let mut opt = optimizer(ratio, mode);
                let mut params = draw_params(&LENGTHS, 1);
                if matches!(kind, Kind::Master | Kind::Stochastic) {
                    for x in params.iter_mut().flatten() {
                        *x = bf16::from_f32(*x).to_f32();
                    }
                }
                let good_steps = n as u64; // 0, 1 or 2 good steps first (the first step skipped too)
                for s in 1..=good_steps {
                    let grads: Vec<Vec<f32>> = draw_grads(&LENGTHS, &[Dist::Normal], 2, s);
                    assert!(!step(&mut opt, kind, &mut params, &grads).unwrap().skipped);
                }
                let before = state(&opt, &params);
                let mut grads: Vec<Vec<f32>> = draw_grads(&LENGTHS, &[Dist::Normal], 2, 10);
                grads[tensor][entry] = *poison;
                let report = step(&mut opt, kind, &mut params, &grads).unwrap();
                let case =
                    format!("{kind:?} ratio {ratio} {mode:?} {poison} at ({tensor}, {entry})");
                assert!(report.skipped, "{case}");
                assert_eq!(report.step, good_steps, "{case}");
                assert!(!report.grad_norm.is_finite(), "{case}");
                assert_eq!(state(&opt, &params), before, "{case}");
                // The next finite step is taken as usual.
                grads[tensor][entry] = 0.0;
                let report = step(&mut opt, kind, &mut params, &grads).unwrap();
                assert!(!report.skipped && report.step == good_steps + 1, "{case}");
            }
        }
    }
}

#[test]
fn bad_configs_are_rejected_by_new() {
    let ok = AdamWConfig::default();
    let bad = [
        ("beta1", AdamWConfig { beta1: 1.0, ..ok }),
        ("beta1", AdamWConfig { beta1: -0.1, ..ok }),
        ("beta2", AdamWConfig { beta2: 1.0, ..ok }),
        (
            "beta2",
            AdamWConfig {
                beta2: f64::NAN,
                ..ok
            },
        ),
        ("eps", AdamWConfig { eps: 0.0, ..ok }),
        ("eps", AdamWConfig { eps: -1e-8, ..ok }),
        (
            "weight_decay",
            AdamWConfig {
                weight_decay: -0.1,
                ..ok
            },
        ),
        (
            "weight_decay",
            AdamWConfig {
                weight_decay: f64::INFINITY,
                ..ok
            },
        ),
        (
            "grad_scale",
            AdamWConfig {
                grad_scale: Some(0.0),
                ..ok
            },
        ),
        (
            "max_grad_norm",
            AdamWConfig {
                max_grad_norm: Some(-1.0),
                ..ok
            },
        ),
    ];
    for (name, config) in bad {
        let err = GmtAdamW::new(table(), config, MaskConfig::default()).err();
        assert!(
            matches!(err, Some(Error::InvalidConfig { name: n, .. }) if n == name),
            "{config:?}: {err:?}"
        );
    }
    for ratio in [-0.1, 1.5, f64::NAN] {
        let mask = MaskConfig {
            mask_ratio: ratio,
            ..MaskConfig::default()
        };
        let err = GmtAdamW::new(table(), ok, mask).err();
        assert!(
            matches!(
                err,
                Some(Error::InvalidConfig {
                    name: "mask_ratio",
                    ..
                })
            ),
            "{err:?}"
        );
    }
}

/// Issue 11: values that pass the f64 checks but round to 0, a subnormal, Inf or (betas) 1 in the
/// f32 update. eps = 1e-50 used to be accepted and turned the parameters into NaN in one step.
#[test]
fn values_unusable_in_f32_are_rejected_by_new() {
    for (config, name, value_f32) in unusable_configs() {
        let err = GmtAdamW::new(table(), config, MaskConfig::default()).err();
        assert!(
            err.as_ref()
                .is_some_and(|e| is_f32_rejection(e, name, value_f32)),
            "{config:?}: {err:?}"
        );
    }
    // The edges f32 can hold are accepted, and a step there stays finite.
    for config in usable_edge_configs() {
        let mask = MaskConfig {
            mask_ratio: 0.5,
            ..MaskConfig::default()
        };
        let mut opt = GmtAdamW::new(table(), config, mask).unwrap();
        let mut params = draw_params(&LENGTHS, 11);
        for seed in 0..2 {
            let mut grads: Vec<Vec<f32>> = draw_grads(&LENGTHS, &[Dist::Normal], 12, seed);
            if seed == 0 {
                grads.iter_mut().flatten().for_each(|g| *g = 0.0);
            }
            let report = opt
                .step(&mut views_mut(&mut params), &views(&grads), 1e-3)
                .unwrap();
            assert!(!report.skipped);
            let (m, v) = opt.moments();
            let all = params.iter().flatten().chain(m).chain(v);
            assert!(all.clone().all(|x| x.is_finite()), "{config:?}");
        }
    }
}

/// Issue 11: a learning rate is checked in f32 too, with the scalars it makes at the step about to
/// be taken; a rejected step leaves every bit of state as it was.
#[test]
fn learning_rates_unusable_in_f32_change_nothing() {
    let mask = MaskConfig {
        mask_ratio: 0.5,
        scope: Scope::Global,
        masked: MaskedUpdate::ZeroGrad,
    };
    let mut opt = GmtAdamW::new(table(), lr_config(), mask).unwrap();
    let mut params = draw_params(&LENGTHS, 7);
    let grads: Vec<Vec<f32>> = draw_grads(&LENGTHS, &[Dist::LogNormal], 8, 1);
    opt.step(&mut views_mut(&mut params), &views(&grads), 1e-3)
        .unwrap();
    let before = state(&opt, &params);
    let mut bf16_params: Vec<Vec<bf16>> = draw_grads(&LENGTHS, &[Dist::Normal], 9, 1);
    let bf16_grads: Vec<Vec<bf16>> = draw_grads(&LENGTHS, &[Dist::Normal], 10, 1);
    for (lr, name, value_f32) in unusable_lrs() {
        let err = opt
            .step(&mut views_mut(&mut params), &views(&grads), lr)
            .unwrap_err();
        assert!(is_f32_rejection(&err, name, value_f32), "lr {lr}: {err:?}");
        assert_eq!(state(&opt, &params), before, "lr {lr} changed the state");
        let untouched = bf16_params.clone();
        let err = opt
            .step_bf16_stochastic(&mut views_mut(&mut bf16_params), &views(&bf16_grads), lr, 3)
            .unwrap_err();
        assert!(is_f32_rejection(&err, name, value_f32), "lr {lr}: {err:?}");
        assert_eq!(state(&opt, &params), before, "lr {lr} changed the state");
        assert!(bf16_params == untouched, "lr {lr} wrote bf16 parameters");
    }
    // 0 and the smallest normal f32 are learning rates.
    for lr in [0.0, f64::from(f32::MIN_POSITIVE)] {
        opt.step(&mut views_mut(&mut params), &views(&grads), lr)
            .unwrap();
    }
    assert_eq!(opt.step_count(), 3);
}

#[test]
fn bad_step_inputs_get_typed_errors_and_change_nothing() {
    let mut opt = optimizer(0.5, MaskMode::Gmt);
    let mut params = draw_params(&LENGTHS, 3);
    let grads: Vec<Vec<f32>> = draw_grads(&LENGTHS, &[Dist::LogNormal], 4, 1);
    step(&mut opt, Kind::F32, &mut params, &grads).unwrap();
    let before = state(&opt, &params);
    let check = |opt: &GmtAdamW,
                 params: &Vec<Vec<f32>>,
                 result: Result<StepReport, Error>,
                 want: &dyn Fn(&Error) -> bool| {
        let err = result.expect_err("must be rejected");
        assert!(want(&err), "{err:?}");
        assert_eq!(state(opt, params), before, "{err:?} changed the state");
    };
    for lr in [-1e-3, f64::NAN, f64::INFINITY] {
        let result = opt.step(&mut views_mut(&mut params), &views(&grads), lr);
        check(&opt, &params, result, &|e| {
            matches!(e, Error::InvalidConfig { name: "lr", .. })
        });
    }
    // Too few buffers, a parameter or a gradient of the wrong length.
    let result = opt.step(&mut views_mut(&mut params[..4]), &views(&grads), 1e-3);
    check(&opt, &params, result, &|e| {
        matches!(
            e,
            Error::CountMismatch {
                what: "parameters",
                expected: 5,
                got: 4
            }
        )
    });
    let mut short = grads.clone();
    short[3].pop();
    let result = opt.step(&mut views_mut(&mut params), &views(&short), 1e-3);
    check(&opt, &params, result, &|e| {
        *e == Error::LengthMismatch {
            tensor: 3,
            what: "gradients",
            expected: 1001,
            got: 1000,
        }
    });
    let mut long = params.clone();
    long[1].push(0.5);
    let result = opt.step(&mut views_mut(&mut long), &views(&grads), 1e-3);
    check(&opt, &params, result, &|e| {
        matches!(
            e,
            Error::LengthMismatch {
                tensor: 1,
                what: "parameters",
                ..
            }
        )
    });
    assert_eq!(
        long[1][..3],
        params[1][..],
        "the rejected buffer is untouched too"
    );
    // Another precision than the state's: bf16 parameters after f32 steps.
    let mut bf16_params: Vec<Vec<bf16>> = params
        .iter()
        .map(|t| t.iter().map(|&x| bf16::from_f32(x)).collect())
        .collect();
    let bf16_grads: Vec<Vec<bf16>> = draw_grads(&LENGTHS, &[Dist::LogNormal], 4, 2);
    let result = opt.step_bf16_master(&mut views_mut(&mut bf16_params), &views(&bf16_grads), 1e-3);
    check(&opt, &params, result, &|e| {
        *e == Error::PrecisionMismatch {
            expected: "f32",
            got: "bf16+master",
        }
    });
    let result = opt.step_bf16_stochastic(
        &mut views_mut(&mut bf16_params),
        &views(&bf16_grads),
        1e-3,
        1,
    );
    check(&opt, &params, result, &|e| {
        matches!(e, Error::PrecisionMismatch { .. })
    });
}

#[test]
fn master_and_stochastic_steps_do_not_mix() {
    let mut opt = optimizer(0.0, MaskMode::Gmt);
    let mut params = draw_params(&LENGTHS, 5);
    let grads: Vec<Vec<f32>> = draw_grads(&LENGTHS, &[Dist::Normal], 6, 1);
    for x in params.iter_mut().flatten() {
        *x = bf16::from_f32(*x).to_f32();
    }
    step(&mut opt, Kind::Master, &mut params, &grads).unwrap();
    let before = state(&opt, &params);
    let err = step(&mut opt, Kind::Stochastic, &mut params, &grads).unwrap_err();
    assert_eq!(
        err,
        Error::PrecisionMismatch {
            expected: "bf16+master",
            got: "bf16+stochastic"
        }
    );
    assert_eq!(state(&opt, &params), before);
    let err = step(&mut opt, Kind::F32, &mut params, &grads).unwrap_err();
    assert!(matches!(err, Error::PrecisionMismatch { got: "f32", .. }));
}
