//! Checkpoints, rejected calls, reused selections and misaligned gradients (part of
//! `tests/adamw_cuda.rs`).

use super::*;
use common::cuda_steps::download;
use cudarc::driver::{CudaSlice, CudaView, DevicePtr};

fn temp_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "gradmask-adamw-cuda-{}-{name}.safetensors",
        std::process::id()
    ))
}

fn initial<C: Combo>() -> Vec<Vec<C::P>> {
    draw_params_as::<C::P>(&LENGTHS, 1)
}

fn lr(step: u64) -> f64 {
    1e-3 * (1.0 + step as f64)
}

/// The GPU optimizer of `case` with the mask mode left at its default (a load must restore it).
fn fresh_gpu(stream: &Arc<CudaStream>, case: &Case) -> CudaGmtAdamW {
    let mut gpu = CudaGmtAdamW::new(stream.clone(), table(), case.adamw, case.mask).unwrap();
    if let Some(frozen) = &case.frozen {
        gpu.set_frozen(frozen).unwrap();
    }
    gpu
}

/// 2N steps straight equal N steps, save, load into a fresh optimizer, N steps: on the GPU, and
/// with the GPU's checkpoint resumed by the CPU engine.
fn resume<C: Combo>(stream: &Arc<CudaStream>, case: &Case, what: &str) {
    let n = case.steps;
    let (_, mut straight) = engines(stream, case);
    let mut p_straight = upload(stream, &initial::<C>());
    for step in 0..2 * n {
        let grads = upload(stream, &grads_of::<C>(case, step));
        C::gpu(&mut straight, &mut p_straight, &grads, lr(step)).unwrap();
    }
    let want = gpu_state(&mut straight, &p_straight);

    let path = temp_path(what);
    let (_, mut first) = engines(stream, case);
    let mut p_resumed = upload(stream, &initial::<C>());
    for step in 0..n {
        let grads = upload(stream, &grads_of::<C>(case, step));
        C::gpu(&mut first, &mut p_resumed, &grads, lr(step)).unwrap();
    }
    first.save(&path).unwrap();
    let mut host = download(stream, &p_resumed);
    drop(first);

    let mut second = fresh_gpu(stream, case);
    second.load(&path).unwrap();
    for step in n..2 * n {
        let grads = upload(stream, &grads_of::<C>(case, step));
        C::gpu(&mut second, &mut p_resumed, &grads, lr(step)).unwrap();
    }
    assert_eq!(
        gpu_state(&mut second, &p_resumed),
        want,
        "{what}: GPU resume"
    );

    let mut cpu = GmtAdamW::new(table(), case.adamw, case.mask).unwrap();
    if let Some(frozen) = &case.frozen {
        cpu.set_frozen(frozen).unwrap();
    }
    cpu.load(&path).unwrap();
    for step in n..2 * n {
        let grads = grads_of::<C>(case, step);
        C::cpu(
            &mut cpu,
            &mut views_mut(&mut host),
            &views(&grads),
            lr(step),
        )
        .unwrap();
    }
    assert_eq!(
        state(&cpu, &host),
        want,
        "{what}: CPU resume of the GPU checkpoint"
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn resume_is_bit_identical_on_the_gpu_and_across_engines() {
    let Some(stream) = gpu("resume_is_bit_identical_on_the_gpu_and_across_engines") else {
        return;
    };
    let gmt = Case::gmt(0.3, Scope::PerTensor, MaskedUpdate::ZeroGrad);
    resume::<F32F32>(&stream, &gmt, "f32");
    let random = Case {
        mode: MaskMode::Random { seed: 9 },
        poison: vec![(1, f32::NAN)],
        ..Case::gmt(0.5, Scope::Groups, MaskedUpdate::ZeroGrad)
    };
    resume::<Master>(&stream, &random, "master");
    let frozen = Case {
        frozen: Some(vec![false, false, true, false, false, true, false]),
        ..Case::gmt(0.3, Scope::Global, MaskedUpdate::Freeze)
    };
    resume::<Stochastic>(&stream, &frozen, "stochastic");
}

#[test]
fn rejected_calls_change_nothing() {
    let Some(stream) = gpu("rejected_calls_change_nothing") else {
        return;
    };
    let case = Case::gmt(0.3, Scope::PerTensor, MaskedUpdate::ZeroGrad);
    let (_, mut gpu) = engines(&stream, &case);
    assert!(matches!(
        gpu.last_report(),
        Err(Error::InvalidConfig { .. })
    ));
    let mut params = upload(&stream, &initial::<F32F32>());
    let grads = upload(&stream, &grads_of::<F32F32>(&case, 0));
    gpu.step_async(&mut params, &grads, 1e-3).unwrap();
    let path = temp_path("rejected");
    gpu.save(&path).unwrap();
    let before = gpu_state(&mut gpu, &params);

    let r = gpu.step_async(&mut params[..6], &grads, 1e-3);
    assert!(matches!(r, Err(Error::CountMismatch { .. })), "{r:?}");
    let r = gpu.step_async(&mut params, &grads[..6], 1e-3);
    assert!(matches!(r, Err(Error::CountMismatch { .. })), "{r:?}");
    let mut short = upload(&stream, &grads_of::<F32F32>(&case, 1));
    short[4] = stream.alloc_zeros::<f32>(5).unwrap();
    let r = gpu.step_async(&mut params, &short, 1e-3);
    assert!(
        matches!(r, Err(Error::LengthMismatch { tensor: 4, .. })),
        "{r:?}"
    );
    for lr in [-1e-3, f64::NAN, f64::INFINITY] {
        let r = gpu.step_async(&mut params, &grads, lr);
        assert!(
            matches!(r, Err(Error::InvalidConfig { name: "lr", .. })),
            "{r:?}"
        );
    }
    let mut bf16_params = upload(&stream, &initial::<Master>());
    let bf16_grads = upload(&stream, &grads_of::<Master>(&case, 1));
    let r = gpu.step_bf16_master_async(&mut bf16_params, &bf16_grads, 1e-3);
    assert!(matches!(r, Err(Error::PrecisionMismatch { .. })), "{r:?}");
    assert!(gpu.set_frozen(&[true]).is_err());
    let other = upload(&stream, &grads_of::<F32F32>(&case, 2));
    let r = gpu.step_reusing_selection_async(&mut params, &other, 1e-3);
    assert!(matches!(r, Err(Error::InvalidConfig { .. })), "{r:?}");

    // Checkpoints: missing, truncated, of another table.
    let r = gpu.load(&temp_path("missing"));
    assert!(matches!(r, Err(Error::Checkpoint { .. })), "{r:?}");
    let bytes = std::fs::read(&path).unwrap();
    let truncated = temp_path("truncated");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let r = gpu.load(&truncated);
    assert!(matches!(r, Err(Error::Checkpoint { .. })), "{r:?}");
    let other_table = TensorTable::per_tensor(&[3, 5]).unwrap();
    let mut small = CudaGmtAdamW::new(stream.clone(), other_table, config(), case.mask).unwrap();
    let small_path = temp_path("small");
    small.save(&small_path).unwrap();
    let r = gpu.load(&small_path);
    assert!(matches!(r, Err(Error::Checkpoint { .. })), "{r:?}");

    assert_eq!(
        gpu_state(&mut gpu, &params),
        before,
        "a rejected call changed the state"
    );
    for p in [path, truncated, small_path] {
        let _ = std::fs::remove_file(p);
    }
}

/// Issue 11, as on the CPU (tests/adamw_inputs.rs): a learning rate is checked in f32 with the
/// scalars of the step about to be taken, by every entry point, and a rejected step changes nothing.
#[test]
fn learning_rates_unusable_in_f32_change_nothing() {
    let Some(stream) = gpu("learning_rates_unusable_in_f32_change_nothing") else {
        return;
    };
    let case = Case {
        adamw: common::f32_limits::lr_config(),
        ..Case::gmt(0.5, Scope::Global, MaskedUpdate::ZeroGrad)
    };
    let (_, mut gpu) = engines(&stream, &case);
    let mut params = upload(&stream, &initial::<F32F32>());
    let grads = upload(&stream, &grads_of::<F32F32>(&case, 0));
    gpu.step_async(&mut params, &grads, 1e-3).unwrap(); // t = 1
    let before = gpu_state(&mut gpu, &params);
    let addresses = |buffers: &[CudaSlice<f32>]| -> Vec<u64> {
        buffers.iter().map(|b| b.device_ptr(&stream).0).collect()
    };
    let (param_addresses, grad_addresses) = (addresses(&params), addresses(&grads));
    for (lr, name, value_f32) in common::f32_limits::unusable_lrs() {
        let rejected = |r: Result<(), Error>| {
            let err = r.unwrap_err();
            assert!(
                common::f32_limits::is_f32_rejection(&err, name, value_f32),
                "lr {lr}: {err:?}"
            );
        };
        rejected(gpu.step_async(&mut params, &grads, lr));
        rejected(gpu.step_reusing_selection_async(&mut params, &grads, lr));
        // SAFETY: the addresses are those of live buffers of the table's lengths on this stream;
        // the call is rejected before anything is enqueued.
        rejected(unsafe {
            gpu.step_raw_async(
                gradmask::Precision::F32,
                gradmask::DType::F32,
                &param_addresses,
                &grad_addresses,
                lr,
                0,
            )
        });
        assert_eq!(gpu_state(&mut gpu, &params), before, "lr {lr}");
    }
}

#[test]
fn reusing_the_selection_equals_selecting_the_same_gradients_again() {
    let Some(stream) = gpu("reusing_the_selection_equals_selecting_the_same_gradients_again")
    else {
        return;
    };
    for case in [
        Case::gmt(0.0, Scope::PerTensor, MaskedUpdate::ZeroGrad),
        Case::gmt(0.3, Scope::Groups, MaskedUpdate::Freeze),
        Case {
            mode: MaskMode::Random { seed: 4 },
            ..Case::gmt(0.5, Scope::PerTensor, MaskedUpdate::ZeroGrad)
        },
    ] {
        let (mut cpu, mut gpu) = engines(&stream, &case);
        let mut host = initial::<F32F32>();
        let mut device = upload(&stream, &host);
        let grads = grads_of::<F32F32>(&case, 0);
        let device_grads = upload(&stream, &grads);
        gpu.step_async(&mut device, &device_grads, 1e-3).unwrap();
        gpu.step_reusing_selection_async(&mut device, &device_grads, 2e-3)
            .unwrap();
        let want = F32F32::cpu(&mut cpu, &mut views_mut(&mut host), &views(&grads), 1e-3);
        want.unwrap();
        let want = F32F32::cpu(&mut cpu, &mut views_mut(&mut host), &views(&grads), 2e-3);
        assert_same_report(&want.unwrap(), &gpu.last_report().unwrap(), "reused");
        assert_eq!(gpu_state(&mut gpu, &device), state(&cpu, &host));
    }
}

#[test]
fn misaligned_gradient_views_match_the_cpu() {
    let Some(stream) = gpu("misaligned_gradient_views_match_the_cpu") else {
        return;
    };
    // Every gradient starts one f32 past a 16-byte boundary: the kernels take their scalar path.
    let case = Case::gmt(0.3, Scope::PerTensor, MaskedUpdate::ZeroGrad);
    let (mut cpu, mut gpu) = engines(&stream, &case);
    let mut host = initial::<F32F32>();
    let mut device = upload(&stream, &host);
    for step in 0..2 {
        let grads = grads_of::<F32F32>(&case, step);
        let mut flat = Vec::new();
        let mut ranges = Vec::new();
        for g in &grads {
            flat.resize(flat.len().next_multiple_of(4) + 1, 0.0f32);
            ranges.push(flat.len()..flat.len() + g.len());
            flat.extend_from_slice(g);
        }
        let big: CudaSlice<f32> = stream.clone_htod(&flat).unwrap();
        let views_on_device: Vec<CudaView<f32>> =
            ranges.iter().map(|r| big.slice(r.clone())).collect();
        gpu.step_async(&mut device, &views_on_device, 1e-3).unwrap();
        let want = F32F32::cpu(&mut cpu, &mut views_mut(&mut host), &views(&grads), 1e-3);
        assert_same_report(&want.unwrap(), &gpu.last_report().unwrap(), "misaligned");
        assert_eq!(
            gpu_state(&mut gpu, &device),
            state(&cpu, &host),
            "step {step}"
        );
    }
}
