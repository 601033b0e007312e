//! `cargo bench --bench select`: the exact per-tensor selection over a Llama-shaped gradient set.
//!
//! CPU cases, on the shapes of Llama-3.2-1B scaled down 12x (146 tensors, ~103M f32 entries, 412 MB,
//! far beyond any cache), log-normal magnitudes, mask ratio 0.2:
//! - `gmt_select/*`: `CpuSelector::select` per tensor (speculating from the previous call, from a
//!   sample as a first call does, or not at all) and global;
//! - `naive_select_nth/serial`, `naive_select_nth/parallel`: copy |g| and `select_nth_unstable`
//!   per tensor (the baseline of the foundation issue), serial and rayon over tensors;
//! - `plain_read_sum`: one parallel read of every gradient (a sum), the floor for any exact method.
//!
//! CUDA cases (skipped, with the reason printed, where there is no GPU), on the full Llama-3.2-1B
//! shapes (146 tensors, ~1.24B f32 entries, 4.9 GB): `select_cuda/gmt_select/{PerTensor,Global}`
//! and `select_cuda/copy_dtod`, a device-to-device copy of the same bytes measured in the same run
//! (its GB/s counts the bytes read plus the bytes written).
//!
//! Every case rotates among 3 gradient sets (same shapes and distribution, other seeds), as
//! consecutive training steps would; speculation uses the previous call's buckets, so it sees
//! similar but never identical data. GB/s counts the gradient bytes once for every case.

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gradmask::{CpuSelector, Scope, TensorTable};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Duration;

const SCALE: usize = 12;
const MASK_RATIO: f64 = 0.2;
const SETS: usize = 3;

fn cpu(c: &mut Criterion) {
    let shapes = common::llama_1b_shapes(SCALE);
    let lengths: Vec<usize> = shapes.iter().map(|(_, n)| *n).collect();
    let total: usize = lengths.iter().sum();
    eprintln!(
        "select bench: {} tensors, {} entries ({:.0} MB f32)",
        shapes.len(),
        total,
        total as f64 * 4e-6
    );
    let sets: Vec<Vec<Vec<f32>>> = (0..SETS as u64)
        .map(|seed| common::llama_gradients(&shapes, 42 + seed))
        .collect();
    let views: Vec<Vec<&[f32]>> = sets
        .iter()
        .map(|set| set.iter().map(|g| &g[..]).collect())
        .collect();
    let table = TensorTable::per_tensor(&lengths).unwrap();
    let mut turn = 0usize;
    let mut next = || {
        turn += 1;
        &views[turn % SETS][..]
    };

    let mut group = c.benchmark_group("select_cpu");
    group.throughput(Throughput::Bytes(total as u64 * 4));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));

    for (scope, speculate) in [
        (Scope::PerTensor, true),
        (Scope::PerTensor, false),
        (Scope::Global, true),
    ] {
        let mut selector = CpuSelector::new(&table, scope);
        selector.set_speculation(speculate);
        let name = format!(
            "{scope:?}{}",
            if speculate { "" } else { "_no_speculation" }
        );
        group.bench_function(BenchmarkId::new("gmt_select", name), |b| {
            b.iter(|| {
                black_box(selector.select(next(), MASK_RATIO).unwrap().groups[0].threshold_key)
            })
        });
        eprintln!(
            "  window hits in the last call: {} of {} groups",
            selector.window_hits(),
            selector.n_groups()
        );
    }
    // A first call: no previous buckets, the windows come from a sample of the gradients.
    let mut selector = CpuSelector::new(&table, Scope::PerTensor);
    group.bench_function(
        BenchmarkId::new("gmt_select", "PerTensor_first_call"),
        |b| {
            b.iter(|| {
                selector.forget_previous_buckets();
                black_box(selector.select(next(), MASK_RATIO).unwrap().groups[0].threshold_key)
            })
        },
    );
    eprintln!(
        "  window hits in the last call: {} of {} groups",
        selector.window_hits(),
        selector.n_groups()
    );
    group.bench_function(BenchmarkId::new("naive_select_nth", "serial"), |b| {
        let mut scratch = Vec::new();
        b.iter(|| {
            black_box(common::naive_per_tensor_thresholds(
                next(),
                MASK_RATIO,
                &mut scratch,
            ))
        })
    });
    group.bench_function(BenchmarkId::new("naive_select_nth", "parallel"), |b| {
        b.iter(|| {
            let keys: Vec<u32> = next()
                .par_iter()
                .map_init(Vec::new, |scratch, g| {
                    common::naive_per_tensor_thresholds(&[g], MASK_RATIO, scratch)[0]
                })
                .collect();
            black_box(keys)
        })
    });
    group.bench_function("plain_read_sum", |b| {
        b.iter(|| {
            let sum: f32 = next()
                .par_iter()
                .map(|g| g.par_chunks(1 << 16).map(lane_sum).sum::<f32>())
                .sum();
            black_box(sum)
        })
    });
    group.finish();

    // The selection is exact: check it against the naive baseline once, outside the timings.
    let mut selector = CpuSelector::new(&table, Scope::PerTensor);
    let selection = selector.select(&views[0], MASK_RATIO).unwrap();
    let naive = common::naive_per_tensor_thresholds(&views[0], MASK_RATIO, &mut Vec::new());
    assert!(
        selection
            .groups
            .iter()
            .zip(&naive)
            .all(|(g, &t)| g.threshold_key == t),
        "CPU selection disagrees with the naive baseline"
    );
}

/// A sum in 16 independent lanes, so that it vectorizes and runs at memory bandwidth: the floor of
/// any method that reads every gradient once.
fn lane_sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let mut sixteens = values.chunks_exact(16);
    for block in &mut sixteens {
        for (lane, &x) in lanes.iter_mut().zip(block) {
            *lane += x;
        }
    }
    lanes.iter().sum::<f32>() + sixteens.remainder().iter().sum::<f32>()
}

fn cuda(c: &mut Criterion) {
    let stream = match gradmask::cuda::default_stream(0) {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!("skipping the CUDA select benches: {e}");
            return;
        }
    };
    let shapes = common::llama_1b_shapes(1);
    let lengths: Vec<usize> = shapes.iter().map(|(_, n)| *n).collect();
    let total: usize = lengths.iter().sum();
    let bytes = total as u64 * 4;
    eprintln!(
        "select_cuda: {} tensors, {total} f32 entries ({:.2} GB)",
        shapes.len(),
        bytes as f64 * 1e-9
    );
    let host = common::llama_gradients(&shapes, 7);
    let grads: Vec<_> = host.iter().map(|g| stream.clone_htod(g).unwrap()).collect();
    drop(host);
    let table = TensorTable::per_tensor(&lengths).unwrap();

    let mut group = c.benchmark_group("select_cuda");
    group.throughput(Throughput::Bytes(bytes));
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    {
        let src = stream.alloc_zeros::<u8>(bytes as usize).unwrap();
        let mut dst = stream.alloc_zeros::<u8>(bytes as usize).unwrap();
        group.throughput(Throughput::Bytes(2 * bytes));
        group.bench_function("copy_dtod", |b| {
            b.iter_custom(|iters| {
                common::gpu_time(&stream, iters, || {
                    stream.memcpy_dtod(&src, &mut dst).unwrap()
                })
            })
        });
        group.throughput(Throughput::Bytes(bytes));
    }
    for scope in [Scope::PerTensor, Scope::Global] {
        let mut selector =
            gradmask::cuda::CudaSelector::new(stream.clone(), &table, scope).unwrap();
        group.bench_function(BenchmarkId::new("gmt_select", format!("{scope:?}")), |b| {
            b.iter_custom(|iters| {
                common::gpu_time(&stream, iters, || {
                    selector.select(&grads, MASK_RATIO).unwrap()
                })
            })
        });
        // Exactness on the bench's own data, outside the timings.
        selector.copy_stats_async().unwrap();
        let gpu = selector.stats().unwrap();
        let host: Vec<Vec<f32>> = grads
            .iter()
            .map(|g| stream.clone_dtoh(g).unwrap())
            .collect();
        let views: Vec<&[f32]> = host.iter().map(|g| &g[..]).collect();
        let cpu = CpuSelector::new(&table, scope)
            .select(&views, MASK_RATIO)
            .unwrap()
            .clone();
        let same = cpu
            .groups
            .iter()
            .zip(&gpu.groups)
            .all(|(a, b)| (a.threshold_key, a.kept) == (b.threshold_key, b.kept));
        assert!(
            same,
            "CUDA selection ({scope:?}) disagrees with the CPU engine on the bench data"
        );
        eprintln!("  {scope:?}: thresholds and kept counts equal the CPU engine's");
    }
    group.finish();
}

criterion_group!(benches, cpu, cuda);
criterion_main!(benches);
