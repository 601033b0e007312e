//! Mask stability on the device (`CudaGmtAdamW::track_stability`) against the CPU engine's
//! (`GmtAdamW::track_stability`, itself checked against recomputed masks in
//! `tests/adamw_stability.rs`): the same counts after every step, for every gradient dtype, GMT in
//! each scope and the random mask, with a dense and a frozen tensor, a skipped step, a checkpoint
//! load (no previous mask after it) and tracking turned off and on again. Tracking never changes
//! the state: it stays bit-identical to the CPU engine's. Every test prints why it skips without a
//! GPU (or the stand-in driver, `scripts/vgpu.sh`).

mod common;

use std::sync::Arc;

use common::adamw_ref::{draw_grads, draw_params, draw_params_as, state, views, views_mut};
use common::cuda_steps::Stochastic;
use common::cuda_steps::{gpu, gpu_state, upload, Combo, F32Bf16, Master, F32F16, F32F32};
use common::{Dist, FromF32};
use cudarc::driver::CudaStream;
use gradmask::cuda::CudaGmtAdamW;
use gradmask::{AdamWConfig, GmtAdamW, MaskConfig, MaskMode, MaskedUpdate, Scope, TensorTable};

/// Sizes 0, 1, 3, 4 (the dense tensor), 999 (the frozen one), and odd lengths whose last 32-entry
/// word is partial, one of them two GPU chunks long.
const LENGTHS: [usize; 7] = [0, 1, 3, 4, 999, 65_537, 40_001];
const DENSE: usize = 3;
const FROZEN: usize = 4;
const DISTS: [Dist; 3] = [Dist::LogNormal, Dist::Ties, Dist::Normal];
/// The step (0-based) whose gradients hold a NaN: skipped by both engines.
const POISONED: u64 = 2;

fn table() -> TensorTable {
    let dense: Vec<bool> = (0..LENGTHS.len()).map(|t| t == DENSE).collect();
    TensorTable::new(&LENGTHS, &[0, 0, 1, 1, 2, 2, 2])
        .unwrap()
        .with_dense(&dense)
        .unwrap()
}

fn engines(
    stream: &Arc<CudaStream>,
    scope: Scope,
    mode: MaskMode,
    ratio: f64,
) -> (GmtAdamW, CudaGmtAdamW) {
    let mask = MaskConfig {
        mask_ratio: ratio,
        scope,
        masked: MaskedUpdate::ZeroGrad,
    };
    let adamw = AdamWConfig::default();
    let frozen: Vec<bool> = (0..LENGTHS.len()).map(|t| t == FROZEN).collect();
    let mut cpu = GmtAdamW::new(table(), adamw, mask)
        .unwrap()
        .with_mask_mode(mode);
    let mut gpu = CudaGmtAdamW::new(stream.clone(), table(), adamw, mask)
        .unwrap()
        .with_mask_mode(mode);
    cpu.set_frozen(&frozen).unwrap();
    gpu.set_frozen(&frozen).unwrap();
    cpu.track_stability(true);
    gpu.track_stability(true).unwrap();
    (cpu, gpu)
}

fn grads_of<C: Combo>(step: u64) -> Vec<Vec<C::G>> {
    let mut grads: Vec<Vec<C::G>> = draw_grads(&LENGTHS, &DISTS, 5, step);
    if step == POISONED {
        grads[5][7] = C::G::from_f32(f32::NAN);
    }
    grads
}

/// `steps` steps on both engines; after each, equal stability (and state). Returns the engines and
/// the parameters, and the sum of `kept_before` over the run (for the caller to see it non-zero).
fn run<C: Combo>(
    stream: &Arc<CudaStream>,
    scope: Scope,
    mode: MaskMode,
    ratio: f64,
    steps: u64,
) -> u64 {
    let what = format!("{}, {scope:?}, {mode:?}, r {ratio}", C::NAME);
    let (mut cpu, mut gpu) = engines(stream, scope, mode, ratio);
    assert!(gpu.stability().unwrap().is_none(), "{what}: no step yet");
    let mut host: Vec<Vec<C::P>> = draw_params_as::<C::P>(&LENGTHS, 3);
    let mut device = upload(stream, &host);
    let mut kept_before = 0;
    for step in 0..steps {
        let grads = grads_of::<C>(step);
        let device_grads = upload(stream, &grads);
        let report = C::cpu(&mut cpu, &mut views_mut(&mut host), &views(&grads), 1e-3).unwrap();
        C::gpu(&mut gpu, &mut device, &device_grads, 1e-3).unwrap();
        assert_eq!(report.skipped, step == POISONED, "{what}, step {step}");
        let at = format!("{what}, step {step}");
        let want = cpu.stability().cloned();
        assert_eq!(gpu.stability().unwrap(), want.as_ref(), "{at}: stability");
        let want = want.unwrap();
        assert_eq!(want.tensors[FROZEN].kept, 0, "{at}: frozen");
        assert_eq!(want.tensors[DENSE].kept, 4, "{at}: dense");
        kept_before += want.tensors.iter().map(|t| t.kept_before).sum::<u64>();
        assert_eq!(
            gpu_state(&mut gpu, &device),
            state(&cpu, &host),
            "{at}: state"
        );
    }
    kept_before
}

#[test]
fn stability_matches_the_cpu_engine_for_every_dtype() {
    let Some(stream) = gpu("stability_matches_the_cpu_engine_for_every_dtype") else {
        return;
    };
    let gmt = MaskMode::Gmt;
    assert!(run::<F32F32>(&stream, Scope::PerTensor, gmt, 0.3, 4) > 0);
    assert!(run::<F32Bf16>(&stream, Scope::PerTensor, gmt, 0.3, 4) > 0);
    assert!(run::<F32F16>(&stream, Scope::Groups, gmt, 0.6, 4) > 0);
    assert!(run::<Master>(&stream, Scope::Global, gmt, 0.3, 4) > 0);
    let random = MaskMode::Random { seed: 11 };
    assert!(run::<Stochastic>(&stream, Scope::PerTensor, random, 0.5, 4) > 0);
}

#[test]
fn stability_matches_the_cpu_engine_in_every_scope_and_mode() {
    let Some(stream) = gpu("stability_matches_the_cpu_engine_in_every_scope_and_mode") else {
        return;
    };
    for scope in [Scope::Groups, Scope::Global] {
        assert!(run::<F32F32>(&stream, scope, MaskMode::Random { seed: 4 }, 0.2, 3) > 0);
    }
    assert!(run::<F32F32>(&stream, Scope::Global, MaskMode::Gmt, 0.9, 3) > 0);
    // Ratio 0 keeps everything: every entry kept at step 2 was kept at step 1.
    let kept_before = run::<F32F32>(&stream, Scope::PerTensor, MaskMode::Gmt, 0.0, 2);
    let live: usize = (0..LENGTHS.len())
        .filter(|&t| t != FROZEN)
        .map(|t| LENGTHS[t])
        .sum();
    assert_eq!(kept_before, live as u64);
}

#[test]
fn a_load_forgets_the_mask_and_off_costs_nothing() {
    let Some(stream) = gpu("a_load_forgets_the_mask_and_off_costs_nothing") else {
        return;
    };
    let (mut cpu, mut gpu) = engines(&stream, Scope::PerTensor, MaskMode::Gmt, 0.5);
    let mut host: Vec<Vec<f32>> = draw_params(&LENGTHS, 3);
    let mut device = upload(&stream, &host);
    let mut step = |cpu: &mut GmtAdamW, gpu: &mut CudaGmtAdamW, at: u64| {
        let grads: Vec<Vec<f32>> = draw_grads(&LENGTHS, &DISTS, 5, at);
        cpu.step(&mut views_mut(&mut host), &views(&grads), 1e-3)
            .unwrap();
        gpu.step_async(&mut device, &upload(&stream, &grads), 1e-3)
            .unwrap();
    };
    step(&mut cpu, &mut gpu, 0);
    step(&mut cpu, &mut gpu, 1);
    assert!(gpu.stability().unwrap().unwrap().has_previous);
    let path = std::env::temp_dir().join(format!("gradmask-stability-{}.gmt", std::process::id()));
    gpu.save(&path).unwrap();
    gpu.load(&path).unwrap();
    cpu.load(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    step(&mut cpu, &mut gpu, 2);
    let after_load = gpu.stability().unwrap().cloned().unwrap();
    assert!(!after_load.has_previous, "a checkpoint holds no mask");
    assert_eq!(Some(&after_load), cpu.stability());
    assert!(after_load.tensors.iter().any(|t| t.kept > 0));

    // Off: no result, and no tracking while off; on again starts without a previous mask.
    gpu.track_stability(false).unwrap();
    cpu.track_stability(false);
    assert!(gpu.stability().unwrap().is_none());
    step(&mut cpu, &mut gpu, 3);
    assert!(gpu.stability().unwrap().is_none());
    gpu.track_stability(true).unwrap();
    cpu.track_stability(true);
    step(&mut cpu, &mut gpu, 4);
    let fresh = gpu.stability().unwrap().cloned().unwrap();
    assert!(!fresh.has_previous);
    assert_eq!(Some(&fresh), cpu.stability());
    step(&mut cpu, &mut gpu, 5);
    assert_eq!(gpu.stability().unwrap(), cpu.stability());
    assert!(gpu.stability().unwrap().unwrap().has_previous);
}
