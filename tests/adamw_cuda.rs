//! `CudaGmtAdamW` against the CPU `GmtAdamW` on identical inputs, for every precision combination.
//!
//! Where the math is the same, the state must be the same bits: p, m, v and master weights after
//! every step, skipped steps included, and after a checkpoint round trip (both ways between the
//! engines). Reports agree exactly except sums of squares and the norm, to 1e-9 relative (the GPU
//! adds f64 squares in another order). The one place the math differs is clipping: the clipping
//! factor comes from that sum, so it may differ in its last f32 bit; there the GPU is checked
//! against the f64 reference with the CPU tests' tolerance (`tests/common/adamw_ref.rs`,
//! rtol 1e-6 of each quantity's terms). Every GPU test prints why it skips where there is no GPU;
//! `typed_errors_without_a_gpu` runs everywhere.

mod common;

use std::sync::Arc;

use common::adamw_ref::{check_step, draw_grads, draw_params, gmt_keeps, state, views, views_mut};
use common::adamw_ref::{draw_params_as, widen, Before, Tol};
use common::cuda_steps::{assert_same_report, gpu, gpu_state, upload, Combo, F32Bf16, F32F16};
use common::cuda_steps::{config, Master, Stochastic, F32F32};
use common::f32_limits::{is_f32_rejection, unusable_configs};
use common::{Dist, FromF32};
use cudarc::driver::CudaStream;
use gradmask::cuda::CudaGmtAdamW;
use gradmask::{AdamWConfig, Error, GmtAdamW, MaskConfig, MaskMode, MaskedUpdate, Scope};
use gradmask::{StepReport, TensorTable};

/// Sizes 0, 1, 3, 4 (dense), odd, and tensors spanning 2 and 5 GPU chunks (65536 entries).
const LENGTHS: [usize; 7] = [0, 1, 3, 4, 65_537, 100_003, 262_147];
const DISTS: [Dist; 4] = [Dist::Normal, Dist::LogNormal, Dist::Ties, Dist::Outlier];
/// f16 cannot hold the outlier (it would be Inf and skip every step).
const F16_DISTS: [Dist; 4] = [Dist::Normal, Dist::LogNormal, Dist::Ties, Dist::Denormals];

fn table() -> TensorTable {
    TensorTable::new(&LENGTHS, &[0, 0, 1, 1, 2, 2, 2])
        .unwrap()
        .with_dense(&[false, false, false, true, false, false, false])
        .unwrap()
}

/// One comparison: both engines from the same start, `steps` steps on the same gradients.
struct Case {
    mask: MaskConfig,
    mode: MaskMode,
    adamw: AdamWConfig,
    frozen: Option<Vec<bool>>,
    /// Steps (0-based) whose gradients get a NaN (tensor 5) or an Inf (dense tensor 3).
    poison: Vec<(u64, f32)>,
    steps: u64,
    dists: &'static [Dist],
}

impl Case {
    fn gmt(mask_ratio: f64, scope: Scope, masked: MaskedUpdate) -> Self {
        Case {
            mask: MaskConfig {
                mask_ratio,
                scope,
                masked,
            },
            mode: MaskMode::Gmt,
            adamw: config(),
            frozen: None,
            poison: Vec::new(),
            steps: 3,
            dists: &DISTS,
        }
    }
}

fn engines(stream: &Arc<CudaStream>, case: &Case) -> (GmtAdamW, CudaGmtAdamW) {
    let mut cpu = GmtAdamW::new(table(), case.adamw, case.mask)
        .unwrap()
        .with_mask_mode(case.mode);
    let mut gpu = CudaGmtAdamW::new(stream.clone(), table(), case.adamw, case.mask)
        .unwrap()
        .with_mask_mode(case.mode);
    if let Some(frozen) = &case.frozen {
        cpu.set_frozen(frozen).unwrap();
        gpu.set_frozen(frozen).unwrap();
    }
    (cpu, gpu)
}

fn grads_of<C: Combo>(case: &Case, step: u64) -> Vec<Vec<C::G>> {
    let mut grads: Vec<Vec<C::G>> = draw_grads(&LENGTHS, case.dists, 7, step);
    for &(_, value) in case.poison.iter().filter(|(at, _)| *at == step) {
        let t = if value.is_nan() { 5 } else { 3 };
        grads[t][1] = C::G::from_f32(value);
    }
    grads
}

/// Runs the case on both engines and asserts equal reports and bit-identical state every step.
fn run<C: Combo>(stream: &Arc<CudaStream>, case: &Case, what: &str) {
    let what = format!("{}, {what}", C::NAME);
    let (mut cpu, mut gpu) = engines(stream, case);
    let mut host: Vec<Vec<C::P>> = draw_params_as::<C::P>(&LENGTHS, 1);
    let mut device = upload(stream, &host);
    for step in 0..case.steps {
        let lr = 1e-3 * (1.0 + step as f64);
        let grads = grads_of::<C>(case, step);
        let device_grads = upload(stream, &grads);
        let before = state(&cpu, &host);
        let want = C::cpu(&mut cpu, &mut views_mut(&mut host), &views(&grads), lr).unwrap();
        C::gpu(&mut gpu, &mut device, &device_grads, lr).unwrap();
        let got = gpu.last_report().unwrap();
        let at = format!("{what}, step {step}");
        assert_same_report(&want, &got, &at);
        let after = gpu_state(&mut gpu, &device);
        assert_eq!(after, state(&cpu, &host), "{at}: state");
        if want.skipped {
            assert_eq!(after, before, "{at}: a skipped step changed the state");
        }
    }
}

#[test]
fn typed_errors_without_a_gpu() {
    let bad = AdamWConfig {
        beta1: 1.0,
        ..AdamWConfig::default()
    };
    let mask = MaskConfig::default();
    // Configurations are checked before the device is touched, with or without a GPU.
    assert!(matches!(
        CudaGmtAdamW::on_device(0, table(), bad, mask),
        Err(Error::InvalidConfig { name: "beta1", .. })
    ));
    let ratio = MaskConfig {
        mask_ratio: 1.5,
        ..mask
    };
    assert!(matches!(
        CudaGmtAdamW::on_device(0, table(), config(), ratio),
        Err(Error::InvalidConfig {
            name: "mask_ratio",
            ..
        })
    ));
    // Issue 11: the values the f32 update cannot use, as on the CPU (tests/adamw_inputs.rs).
    for (config, name, value_f32) in unusable_configs() {
        let err = CudaGmtAdamW::on_device(0, table(), config, mask).err();
        assert!(
            err.as_ref()
                .is_some_and(|e| is_f32_rejection(e, name, value_f32)),
            "{config:?}: {err:?}"
        );
    }
    match CudaGmtAdamW::on_device(0, table(), config(), mask) {
        Ok(_) => eprintln!("typed_errors_without_a_gpu: a GPU is present, the optimizer built"),
        Err(e @ (Error::NoDriver | Error::NoDevice { .. } | Error::KernelsNotBuilt)) => {
            eprintln!("typed_errors_without_a_gpu: {e}")
        }
        Err(e) => panic!("expected NoDriver, NoDevice or KernelsNotBuilt, got {e:?}"),
    }
}

#[test]
fn every_precision_matches_the_cpu_bit_for_bit() {
    let Some(stream) = gpu("every_precision_matches_the_cpu_bit_for_bit") else {
        return;
    };
    for (ratio, scope, masked) in [
        (0.0, Scope::PerTensor, MaskedUpdate::ZeroGrad),
        (0.3, Scope::PerTensor, MaskedUpdate::ZeroGrad),
        (0.3, Scope::Groups, MaskedUpdate::Freeze),
        (0.9, Scope::Global, MaskedUpdate::Freeze),
        (1.0, Scope::PerTensor, MaskedUpdate::ZeroGrad),
    ] {
        let case = Case::gmt(ratio, scope, masked);
        let what = format!("GMT r={ratio} {scope:?} {masked:?}");
        run::<F32F32>(&stream, &case, &what);
        run::<F32Bf16>(&stream, &case, &what);
        run::<Master>(&stream, &case, &what);
        run::<Stochastic>(&stream, &case, &what);
        let f16_case = Case {
            dists: &F16_DISTS,
            ..Case::gmt(ratio, scope, masked)
        };
        run::<F32F16>(&stream, &f16_case, &what);
    }
}

#[test]
fn random_mask_and_frozen_tensors_match_the_cpu() {
    let Some(stream) = gpu("random_mask_and_frozen_tensors_match_the_cpu") else {
        return;
    };
    let frozen = vec![false, true, false, true, false, true, false];
    for masked in [MaskedUpdate::ZeroGrad, MaskedUpdate::Freeze] {
        let random = Case {
            mode: MaskMode::Random { seed: 11 },
            ..Case::gmt(0.6, Scope::Groups, masked)
        };
        run::<F32F32>(&stream, &random, &format!("random {masked:?}"));
        run::<Stochastic>(&stream, &random, &format!("random {masked:?}"));
        let random_frozen = Case {
            frozen: Some(frozen.clone()),
            ..random
        };
        run::<Master>(
            &stream,
            &random_frozen,
            &format!("random, frozen {masked:?}"),
        );
        let gmt_frozen = Case {
            frozen: Some(frozen.clone()),
            ..Case::gmt(0.3, Scope::PerTensor, masked)
        };
        run::<F32F32>(&stream, &gmt_frozen, &format!("GMT, frozen {masked:?}"));
        run::<Master>(&stream, &gmt_frozen, &format!("GMT, frozen {masked:?}"));
    }
}

#[test]
fn non_finite_gradients_skip_the_step_on_the_device() {
    let Some(stream) = gpu("non_finite_gradients_skip_the_step_on_the_device") else {
        return;
    };
    // A NaN in a masked tensor at step 1, an Inf in the dense tensor at step 3. For Master, the
    // very first step is skipped too: the master weights must start from the next step taken.
    let case = Case {
        poison: vec![(1, f32::NAN), (3, f32::INFINITY)],
        steps: 5,
        ..Case::gmt(0.3, Scope::PerTensor, MaskedUpdate::ZeroGrad)
    };
    run::<F32F32>(&stream, &case, "NaN and Inf");
    run::<Stochastic>(&stream, &case, "NaN and Inf");
    let first = Case {
        poison: vec![(0, f32::NAN), (2, f32::NAN)],
        steps: 4,
        mode: MaskMode::Random { seed: 5 },
        ..Case::gmt(0.5, Scope::Global, MaskedUpdate::Freeze)
    };
    run::<Master>(&stream, &first, "NaN at the first step");
}

#[test]
fn clipping_matches_the_f64_reference() {
    let Some(stream) = gpu("clipping_matches_the_f64_reference") else {
        return;
    };
    let adamw = AdamWConfig {
        max_grad_norm: Some(0.05),
        ..config()
    };
    let mask = MaskConfig {
        mask_ratio: 0.3,
        ..MaskConfig::default()
    };
    let table = table();
    let mut gpu = CudaGmtAdamW::new(stream.clone(), table.clone(), adamw, mask).unwrap();
    let mut host = draw_params(&LENGTHS, 2);
    let mut device = upload(&stream, &host);
    for step in 1..=3u64 {
        let grads: Vec<Vec<f32>> = draw_grads(&LENGTHS, &DISTS, 3, step);
        let (m, v) = gpu.moments_to_host().unwrap();
        let before = Before {
            p: widen(&host),
            m,
            v,
        };
        let report: StepReport = gpu
            .step(&mut device, &upload(&stream, &grads), 1e-3)
            .unwrap();
        assert!(report.grad_norm > 0.05, "clipping must be active");
        host = common::cuda_steps::download(&stream, &device);
        let keeps = gmt_keeps(&table, mask.scope, &report, &views(&grads));
        let (m, v) = gpu.moments_to_host().unwrap();
        let tol = Tol {
            rtol: 1e-6,
            p_rel: 0.0,
        };
        let (offsets, grads) = (table.offsets(), views(&grads));
        let masked = mask.masked;
        check_step(
            offsets,
            &adamw,
            masked,
            step,
            1e-3,
            &before,
            &grads,
            &keeps,
            &widen(&host),
            &m,
            &v,
            tol,
        );
    }
}

#[path = "adamw_cuda/resume.rs"]
mod resume;

#[path = "adamw_cuda/raw.rs"]
mod raw;

#[path = "adamw_cuda/ahead.rs"]
mod ahead;
