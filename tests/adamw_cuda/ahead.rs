//! Steps enqueued far ahead of the device (part of `tests/adamw_cuda.rs`).
//!
//! The step counter lives on the device (`src/cuda/adamw/plan.rs`): the host sends the plans of
//! every step number the device may be at, and never waits for a skip flag. On the stand-in driver
//! an event query never sees work that no synchronisation has run, so here the plan window grows
//! to its cap (32 unresolved steps) and the 33rd step waits: both paths run. On a GPU the window
//! stays as short as the device is behind.

use super::*;

/// Sizes 0, 1, 3 and odd, one tensor spanning 2 GPU chunks; tensor 2 dense.
const SMALL: [usize; 5] = [0, 1, 3, 1001, 70_001];

fn small_table() -> TensorTable {
    TensorTable::new(&SMALL, &[0, 0, 1, 1, 1])
        .unwrap()
        .with_dense(&[false, false, true, false, false])
        .unwrap()
}

/// `lr(step)` for steps 0..n enqueued back to back, with no report and no wait in between, a NaN
/// in tensor 3 at the steps in `poison`: after the last, the state (p, m, v, master weights, step
/// count) equals the CPU engine's bit for bit, and so does the last report.
fn ahead<C: Combo>(
    stream: &Arc<CudaStream>,
    adamw: AdamWConfig,
    mode: MaskMode,
    poison: &[u64],
    lr: impl Fn(u64) -> f64,
    n: u64,
) {
    let mask = MaskConfig {
        mask_ratio: 0.4,
        scope: Scope::Groups,
        masked: MaskedUpdate::ZeroGrad,
    };
    let mut cpu = GmtAdamW::new(small_table(), adamw, mask)
        .unwrap()
        .with_mask_mode(mode);
    let mut gpu = CudaGmtAdamW::new(stream.clone(), small_table(), adamw, mask)
        .unwrap()
        .with_mask_mode(mode);
    let mut host: Vec<Vec<C::P>> = draw_params_as::<C::P>(&SMALL, 3);
    let mut device = upload(stream, &host);
    let mut want = None;
    for step in 0..n {
        let mut grads: Vec<Vec<C::G>> = draw_grads(&SMALL, &DISTS, 11, step);
        if poison.contains(&step) {
            grads[3][7] = C::G::from_f32(f32::NAN);
        }
        let device_grads = upload(stream, &grads);
        let lr = lr(step);
        want = Some(C::cpu(&mut cpu, &mut views_mut(&mut host), &views(&grads), lr).unwrap());
        C::gpu(&mut gpu, &mut device, &device_grads, lr).unwrap();
    }
    let what = format!("{}, {mode:?}, {n} steps ahead", C::NAME);
    assert_same_report(&want.unwrap(), &gpu.last_report().unwrap(), &what);
    assert_eq!(gpu_state(&mut gpu, &device), state(&cpu, &host), "{what}");
}

#[test]
fn steps_enqueued_ahead_of_the_device_match_the_cpu() {
    let Some(stream) = gpu("steps_enqueued_ahead_of_the_device_match_the_cpu") else {
        return;
    };
    let steps = 40;
    // Skipped steps at the start (the master weights start at the first step taken), inside the
    // first window, at the cap and after it.
    let poison = [0, 1, 7, 20, 32, 33];
    let lr = |step: u64| 1e-3 * (1.0 + (step % 5) as f64);
    ahead::<Master>(&stream, config(), MaskMode::Gmt, &poison, lr, steps);
    ahead::<F32F32>(
        &stream,
        config(),
        MaskMode::Random { seed: 9 },
        &poison,
        lr,
        steps,
    );
    ahead::<Stochastic>(&stream, config(), MaskMode::Gmt, &poison, lr, 12);
}

/// An lr whose step size overflows f32 at the first step numbers but not at the one the device is
/// at: the host cannot tell before it learns the count, so it waits and then accepts, as the CPU.
#[test]
fn an_lr_valid_only_at_the_devices_step_number_is_accepted() {
    let Some(stream) = gpu("an_lr_valid_only_at_the_devices_step_number_is_accepted") else {
        return;
    };
    let adamw = AdamWConfig {
        beta1: 0.999_999,
        ..AdamWConfig::default()
    };
    // Step 13 (index 12): lr / (1 - beta1^13) = 3.8e37, finite in f32; at t = 1 it is 5e38.
    let lr = |step: u64| if step == 12 { 5e32 } else { 1e-3 };
    assert!(adamw.validate_step(1, 5e32).is_err() && adamw.validate_step(13, 5e32).is_ok());
    ahead::<F32F32>(&stream, adamw, MaskMode::Gmt, &[], lr, 13);
}

/// One step of combo A (skipped by a NaN unless `first_taken`), left unresolved, then one of
/// combo B, another precision: the CPU engine accepts B only if A's step was skipped (the state's
/// precision is still open), and so must the GPU, which has to wait to know. Returns whether B was
/// accepted.
fn switch<A: Combo, B: Combo>(stream: &Arc<CudaStream>, first_taken: bool) -> bool {
    let mask = MaskConfig {
        mask_ratio: 0.4,
        ..MaskConfig::default()
    };
    let mut cpu = GmtAdamW::new(small_table(), config(), mask).unwrap();
    let mut gpu = CudaGmtAdamW::new(stream.clone(), small_table(), config(), mask).unwrap();
    let mut host_a: Vec<Vec<A::P>> = draw_params_as::<A::P>(&SMALL, 3);
    let mut device_a = upload(stream, &host_a);
    let mut grads_a: Vec<Vec<A::G>> = draw_grads(&SMALL, &DISTS, 11, 0);
    if !first_taken {
        grads_a[3][7] = A::G::from_f32(f32::NAN);
    }
    A::cpu(
        &mut cpu,
        &mut views_mut(&mut host_a),
        &views(&grads_a),
        1e-3,
    )
    .unwrap();
    A::gpu(&mut gpu, &mut device_a, &upload(stream, &grads_a), 1e-3).unwrap();

    let mut host_b: Vec<Vec<B::P>> = draw_params_as::<B::P>(&SMALL, 4);
    let mut device_b = upload(stream, &host_b);
    let grads_b: Vec<Vec<B::G>> = draw_grads(&SMALL, &DISTS, 12, 1);
    let want = B::cpu(
        &mut cpu,
        &mut views_mut(&mut host_b),
        &views(&grads_b),
        1e-3,
    );
    let got = B::gpu(&mut gpu, &mut device_b, &upload(stream, &grads_b), 1e-3);
    let what = format!("{} then {}, first taken: {first_taken}", A::NAME, B::NAME);
    match want {
        Ok(_) => {
            got.unwrap_or_else(|e| panic!("{what}: the GPU rejected what the CPU took: {e}"));
            assert_eq!(
                gpu_state(&mut gpu, &device_b),
                state(&cpu, &host_b),
                "{what}"
            );
            true
        }
        Err(Error::PrecisionMismatch { .. }) => {
            assert!(
                matches!(got, Err(Error::PrecisionMismatch { .. })),
                "{what}: {got:?}"
            );
            assert_eq!(
                gpu_state(&mut gpu, &device_a),
                state(&cpu, &host_a),
                "{what}"
            );
            false
        }
        Err(e) => panic!("{what}: the CPU failed: {e}"),
    }
}

#[test]
fn another_precision_after_unresolved_steps_follows_the_cpu() {
    let Some(stream) = gpu("another_precision_after_unresolved_steps_follows_the_cpu") else {
        return;
    };
    assert!(switch::<F32F32, Master>(&stream, false));
    assert!(!switch::<F32F32, Master>(&stream, true));
    assert!(switch::<Master, Stochastic>(&stream, false));
    assert!(!switch::<Master, Stochastic>(&stream, true));
}
