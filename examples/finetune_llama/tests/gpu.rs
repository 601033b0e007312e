//! The trainer on a CUDA device (`--features cuda` only; each test prints why it skips where no
//! device opens):
//! - the device optimizer, stepping candle's buffers in place after device-side accumulation,
//!   equals the crate's CPU engine fed the same gradients, bit for bit, for every scope and the
//!   random mask (weights after each step; kept counts, targets and thresholds in the report; the
//!   per-tensor kept counts it takes on the device for the per-layer plot);
//! - a 30-step micro run with `--cuda`: the loss falls, kept counts match the mask ratio, the first
//!   loss matches the CPU run's, and a run resumed from its step-10 checkpoint follows the
//!   uninterrupted one.

use candle_core::Device;
use gradmask::{AdamWConfig, GmtAdamW, GroupMap, MaskConfig, MaskMode, MaskedUpdate, Scope};

use super::{assert_learns_and_masks_half, micro_args, scratch, threads, train_losses};
use crate::cli::Size;
use crate::data::{make_batch, Tokenized};
use crate::eval::mean_nll;
use crate::model::Llama;
use crate::optim::{self, OptimSpec, Optimizer};
use crate::train::host_params;
use crate::{builtin_config, run};

fn cuda(test: &str) -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(device) => Some(device),
        Err(e) => {
            eprintln!("skipping {test}: no CUDA device ({e})");
            None
        }
    }
}

fn bits(params: &[Vec<f32>]) -> Vec<u32> {
    params.iter().flatten().map(|x| x.to_bits()).collect()
}

/// A seeded micro-batch of 4 sequences over a 99-token vocabulary.
fn batch(seed: u64, device: &Device) -> crate::data::Batch {
    let items: Vec<Tokenized> = (0..4u64)
        .map(|row| {
            let len = 5 + ((seed + row) % 6) as usize;
            let ids = (0..len as u64)
                .map(|i| (3 + (seed * 31 + row * 17 + i * 7) % 95) as u32)
                .collect();
            Tokenized { ids, n_prompt: 2 }
        })
        .collect();
    let refs: Vec<&Tokenized> = items.iter().collect();
    make_batch(&refs, 0, device).unwrap()
}

#[test]
fn device_steps_equal_the_cpu_engine_on_the_same_gradients() {
    let Some(device) = cuda("device_steps_equal_the_cpu_engine_on_the_same_gradients") else {
        return;
    };
    for (scope, mode) in [
        (Scope::PerTensor, MaskMode::Gmt),
        (Scope::Groups, MaskMode::Gmt),
        (Scope::Global, MaskMode::Gmt),
        (Scope::PerTensor, MaskMode::Random { seed: 5 }),
    ] {
        let what = format!("{scope:?} {mode:?}");
        let model = Llama::init(builtin_config(Size::Micro, 99), 1, &device).unwrap();
        let spec = OptimSpec {
            track_stability: false,
            // No clipping: its factor comes from a sum of squares added in another order on the
            // GPU, the one place the engines may differ in the last bit.
            adamw: AdamWConfig {
                weight_decay: 0.01,
                grad_scale: Some(3.0),
                max_grad_norm: None,
                ..AdamWConfig::default()
            },
            mask: MaskConfig {
                mask_ratio: 0.4,
                scope,
                masked: MaskedUpdate::ZeroGrad,
            },
            mode,
            frozen: None,
        };
        let mut gpu = Optimizer::new(&model, &spec).unwrap();
        let table = optim::table(&model).unwrap();
        let mut cpu = GmtAdamW::new(table, spec.adamw, spec.mask)
            .unwrap()
            .with_mask_mode(mode);
        let mut host = host_params(&model).unwrap();
        for step in 0..3u64 {
            gpu.zero_grads();
            let mut grads: Vec<Option<Vec<f32>>> = vec![None; model.params.len()];
            for micro in 0..3 {
                let store = mean_nll(&model, &batch(step * 3 + micro, &device))
                    .unwrap()
                    .backward()
                    .unwrap();
                for (param, acc) in model.params.iter().zip(grads.iter_mut()) {
                    if let Some(g) = store.get(param.var.as_tensor()) {
                        let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                        match acc {
                            None => *acc = Some(g), // as candle: the first gradient, then sums
                            Some(sum) => sum.iter_mut().zip(&g).for_each(|(s, g)| *s += g),
                        }
                    }
                }
                gpu.accumulate(&model, &store).unwrap();
            }
            let grads: Vec<Vec<f32>> = grads
                .into_iter()
                .zip(&host)
                .map(|(g, p)| g.unwrap_or_else(|| vec![0.0; p.len()]))
                .collect();
            let lr = 1e-2 * (1.0 + step as f64);
            let mut p: Vec<&mut [f32]> = host.iter_mut().map(|p| p.as_mut_slice()).collect();
            let g: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
            let want = cpu.step(&mut p, &g, lr).unwrap();
            let got = gpu.step(&model, lr).unwrap();
            assert_eq!(want.skipped, got.skipped, "{what}, step {step}");
            assert_eq!(want.step, got.step, "{what}, step {step}");
            for (i, (a, b)) in want.groups.iter().zip(&got.groups).enumerate() {
                assert_eq!(
                    (a.len, a.target, a.kept, a.threshold_key),
                    (b.len, b.target, b.kept, b.threshold_key),
                    "{what}, step {step}, group {i}"
                );
            }
            assert_eq!(
                bits(&gpu.params().unwrap()),
                bits(&host),
                "{what}, step {step}: weights after the step"
            );
            // Per-tensor kept counts on the device (what the per-layer plot uses for wide groups).
            if mode == MaskMode::Gmt {
                let map = GroupMap::new(&optim::table(&model).unwrap(), scope);
                for (i, g) in grads.iter().enumerate() {
                    let stats = &got.groups[map.group_of[i] as usize];
                    let keeps = |x: &&f32| stats.keeps_key(x.to_bits() & 0x7fff_ffff);
                    let want = g.iter().filter(keeps).count() as u64;
                    let kept = gpu.count_kept(i, stats).unwrap();
                    assert_eq!(kept, want, "{what}, step {step}, tensor {i}: kept entries");
                }
            }
        }
    }
}

#[test]
fn micro_run_on_the_gpu_learns_masks_the_ratio_and_resumes() {
    let Some(_) = cuda("micro_run_on_the_gpu_learns_masks_the_ratio_and_resumes") else {
        return;
    };
    let cpu_dir = scratch("gpu-cpu");
    run(&micro_args(&cpu_dir, &[]), threads()).unwrap();
    let cpu_losses: Vec<f64> = train_losses(&cpu_dir, "gmt");

    let full = scratch("gpu-full");
    run(&micro_args(&full, &["--cuda"]), threads()).unwrap();
    let losses = assert_learns_and_masks_half(&full);
    // The same weights and batch: only the order of float operations differs.
    assert!(
        (losses[0] - cpu_losses[0]).abs() <= 1e-3 * cpu_losses[0],
        "first loss {} on the GPU, {} on the CPU",
        losses[0],
        cpu_losses[0]
    );

    let split = scratch("gpu-split");
    assert!(run(
        &micro_args(&split, &["--cuda", "--stop-after", "15"]),
        threads()
    )
    .unwrap()
    .is_empty());
    run(&micro_args(&split, &["--cuda", "--resume"]), threads()).unwrap();
    let resumed: Vec<f64> = train_losses(&split, "gmt");
    assert_eq!(resumed.len(), 30);
    for (step, (a, b)) in resumed.iter().zip(&losses).enumerate() {
        // cuBLAS and candle's reductions may add in another order from run to run.
        assert!(
            (a - b).abs() <= 1e-4 * b.abs(),
            "step {step}: resumed {a}, straight {b}"
        );
    }
    for dir in [cpu_dir, full, split] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}
