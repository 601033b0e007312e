//! `cargo bench --bench step`: one optimizer step (selection plus masked AdamW) on Llama shapes.
//!
//! CUDA cases (`step_cuda`, skipped with the reason printed where there is no GPU), f32 parameters
//! and gradients on the full Llama-3.2-1B shapes (146 tensors, ~1.24B entries), per-tensor GMT at
//! mask ratio 0.2, log-normal gradients:
//! - `copy_dtod`: a device-to-device copy of the gradient bytes, measured in the same run; its GB/s
//!   counts the bytes read plus the bytes written;
//! - `gmt_step`: `CudaGmtAdamW::step_async` (the exact selection, then the fused masked update);
//!   GB/s counts 32 B per parameter (the selection's pass 1 reads g once more than AdamW);
//! - `plain_step`: the same at mask ratio 0 (plain AdamW: the selection's first pass for the norm
//!   and the non-finite check, then the update); GB/s counts 28 B per parameter, the floor of a
//!   plain fused AdamW, although this step reads g twice;
//! - `fused_update`: the update kernel alone (`step_reusing_selection_async`), 28 B per parameter:
//!   the number the 85%-of-copy target is about.
//!
//! Every step call first waits for the previous step's skip flag (see `src/cuda/adamw/mod.rs`),
//! so the device idles while the host enqueues the next step's 4-6 launches (tens of µs against a
//! step of several ms). The GMT and plain cases rotate between 2 gradient sets (the second gives
//! each tensor another tensor's gradient of the same shape);
//! `fused_update` must reuse the gradients its selection ran on. A summary with the ratios
//! (update vs copy, GMT vs plain) is printed after the criterion group.
//!
//! The CPU cases of this bench live in their own group beside this one.

use crate::common;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use cudarc::driver::{CudaSlice, CudaStream};
use gradmask::cuda::CudaGmtAdamW;
use gradmask::{AdamWConfig, MaskConfig, Scope, TensorTable};

const MASK_RATIO: f64 = 0.2;
const LR: f64 = 1e-4;

fn optimizer(stream: &Arc<CudaStream>, table: &TensorTable, mask_ratio: f64) -> CudaGmtAdamW {
    let mask = MaskConfig {
        mask_ratio,
        scope: Scope::PerTensor,
        ..MaskConfig::default()
    };
    let adamw = AdamWConfig {
        weight_decay: 0.01,
        ..AdamWConfig::default()
    };
    CudaGmtAdamW::new(stream.clone(), table.clone(), adamw, mask).unwrap()
}

pub fn cuda(c: &mut Criterion) {
    let stream = match gradmask::cuda::default_stream(0) {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!("skipping the CUDA step benches: {e}");
            return;
        }
    };
    let shapes = common::llama_1b_shapes(1);
    let lengths: Vec<usize> = shapes.iter().map(|(_, n)| *n).collect();
    let total = lengths.iter().sum::<usize>() as u64;
    eprintln!(
        "step_cuda: {} tensors, {total} f32 parameters ({:.2} GB each of p, g, m, v)",
        shapes.len(),
        total as f64 * 4e-9
    );
    let host = common::llama_gradients(&shapes, 7);
    let first: Vec<CudaSlice<f32>> = host.iter().map(|g| stream.clone_htod(g).unwrap()).collect();
    drop(host);
    // The second set gives each tensor the gradient of the next tensor of the same length (layer
    // l + 1's q_proj for layer l's, ...): other data per tensor, without a second host draw.
    let second: Vec<CudaSlice<f32>> = (0..lengths.len())
        .map(|t| {
            let same = |u: &usize| lengths[*u] == lengths[t];
            let next = (t + 1..lengths.len())
                .find(same)
                .or_else(|| (0..t).find(same));
            stream.clone_dtod(&first[next.unwrap_or(t)]).unwrap()
        })
        .collect();
    let sets = [first, second];
    let mut params: Vec<CudaSlice<f32>> = sets[0]
        .iter()
        .map(|g| {
            let mut p = stream.alloc_zeros::<f32>(g.len()).unwrap();
            stream.memcpy_dtod(g, &mut p).unwrap();
            p
        })
        .collect();
    let table = TensorTable::per_tensor(&lengths).unwrap();

    let mut group = c.benchmark_group("step_cuda");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let mut timed = Vec::new(); // (name, bytes per step, seconds per step)
    let mut time = |name: &str, bytes: u64, f: &mut dyn FnMut()| {
        common::gpu_time(&stream, 2, &mut *f);
        let per_step = common::gpu_time(&stream, 10, &mut *f).as_secs_f64() / 10.0;
        timed.push((name.to_string(), bytes, per_step));
    };

    {
        let src = stream.alloc_zeros::<u8>(4 * total as usize).unwrap();
        let mut dst = stream.alloc_zeros::<u8>(4 * total as usize).unwrap();
        let bytes = 2 * 4 * total;
        group.throughput(Throughput::Bytes(bytes));
        let mut copy = || stream.memcpy_dtod(&src, &mut dst).unwrap();
        group.bench_function("copy_dtod", |b| {
            b.iter_custom(|iters| common::gpu_time(&stream, iters, &mut copy))
        });
        time("copy_dtod", bytes, &mut copy);
    }
    for (name, ratio, bytes_per_param) in [("gmt_step", MASK_RATIO, 32), ("plain_step", 0.0, 28)] {
        let mut opt = optimizer(&stream, &table, ratio);
        let mut turn = 0usize;
        let mut step = || {
            turn += 1;
            opt.step_async(&mut params, &sets[turn % 2], LR).unwrap();
        };
        group.throughput(Throughput::Bytes(bytes_per_param * total));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| common::gpu_time(&stream, iters, &mut step))
        });
        time(name, bytes_per_param * total, &mut step);
        let report = opt.last_report().unwrap();
        assert!(!report.skipped, "{name}: the bench data must not skip");
    }
    {
        let mut opt = optimizer(&stream, &table, 0.0);
        opt.step_async(&mut params, &sets[0], LR).unwrap();
        let mut update = || {
            opt.step_reusing_selection_async(&mut params, &sets[0], LR)
                .unwrap()
        };
        group.throughput(Throughput::Bytes(28 * total));
        group.bench_function("fused_update", |b| {
            b.iter_custom(|iters| common::gpu_time(&stream, iters, &mut update))
        });
        time("fused_update", 28 * total, &mut update);
    }
    group.finish();

    let gbs = |bytes: u64, secs: f64| bytes as f64 / secs * 1e-9;
    let copy = timed
        .iter()
        .find(|t| t.0 == "copy_dtod")
        .map(|t| gbs(t.1, t.2));
    let find = |name: &str| timed.iter().find(|t| t.0 == name).map(|t| t.2);
    eprintln!("step_cuda summary (10 calls each, after 2 warm-up calls):");
    for (name, bytes, secs) in &timed {
        let rate = gbs(*bytes, *secs);
        let vs_copy = copy.map_or(f64::NAN, |c| 100.0 * rate / c);
        eprintln!(
            "  {name:<14} {:9.3} ms  {rate:7.1} GB/s  {vs_copy:5.1}% of copy",
            secs * 1e3
        );
    }
    if let (Some(gmt), Some(plain)) = (find("gmt_step"), find("plain_step")) {
        eprintln!("  GMT step / plain step: {:.2}x", gmt / plain);
    }
}
