//! The trainer on a CUDA device (`--features cuda` only; the test prints why it skips where no
//! device opens): a 30-step micro run with `--cuda`: the loss falls, kept counts match the mask
//! ratio, the first loss matches the CPU run's, and a run resumed from its step-10 checkpoint
//! follows the uninterrupted one. (The optimizer on candle's CUDA buffers against the CPU engine,
//! bit for bit, is the crate's `tests/candle_cuda.rs`.)

use candle_core::Device;

use super::{assert_learns_and_masks_half, micro_args, scratch, threads, train_losses};
use crate::run;

fn cuda(test: &str) -> Option<Device> {
    match Device::new_cuda(0) {
        Ok(device) => Some(device),
        Err(e) => {
            eprintln!("skipping {test}: needs a CUDA device with cuBLAS, none opened ({e})");
            None
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
