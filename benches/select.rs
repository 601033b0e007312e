//! `cargo bench --bench select`: the exact per-tensor selection over a Llama-shaped gradient set.
//!
//! CPU cases, on the shapes of Llama-3.2-1B scaled down 12x (146 tensors, ~103M f32 entries, 412 MB,
//! far beyond any cache), log-normal magnitudes, mask ratio 0.2:
//! - `gmt_select/per_tensor`, `gmt_select/global`: `CpuSelector::select`;
//! - `naive_select_nth/serial`, `naive_select_nth/parallel`: copy |g| and `select_nth_unstable`
//!   per tensor (the baseline of the foundation issue), serial and rayon over tensors;
//! - `plain_read_sum`: one parallel read of every gradient (a sum), the floor for any exact method.
//!
//! GB/s counts the gradient bytes once for every case.

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gradmask::{CpuSelector, Scope, TensorTable};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Duration;

const SCALE: usize = 12;
const MASK_RATIO: f64 = 0.2;

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
    let grads = common::llama_gradients(&shapes, 42);
    let views: Vec<&[f32]> = grads.iter().map(|g| &g[..]).collect();
    let table = TensorTable::per_tensor(&lengths).unwrap();

    let mut group = c.benchmark_group("select_cpu");
    group.throughput(Throughput::Bytes(total as u64 * 4));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));

    for scope in [Scope::PerTensor, Scope::Global] {
        let mut selector = CpuSelector::new(&table, scope);
        group.bench_function(BenchmarkId::new("gmt_select", format!("{scope:?}")), |b| {
            b.iter(|| {
                black_box(selector.select(&views, MASK_RATIO).unwrap().groups[0].threshold_key)
            })
        });
    }
    group.bench_function(BenchmarkId::new("naive_select_nth", "serial"), |b| {
        let mut scratch = Vec::new();
        b.iter(|| {
            black_box(common::naive_per_tensor_thresholds(
                &views,
                MASK_RATIO,
                &mut scratch,
            ))
        })
    });
    group.bench_function(BenchmarkId::new("naive_select_nth", "parallel"), |b| {
        b.iter(|| {
            let keys: Vec<u32> = views
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
            let sum: f32 = views
                .par_iter()
                .map(|g| {
                    g.par_chunks(1 << 16)
                        .map(|c| c.iter().sum::<f32>())
                        .sum::<f32>()
                })
                .sum();
            black_box(sum)
        })
    });
    group.finish();

    // The selection is exact: check it against the naive baseline once, outside the timings.
    let mut selector = CpuSelector::new(&table, Scope::PerTensor);
    let selection = selector.select(&views, MASK_RATIO).unwrap();
    let naive = common::naive_per_tensor_thresholds(&views, MASK_RATIO, &mut Vec::new());
    assert!(
        selection
            .groups
            .iter()
            .zip(&naive)
            .all(|(g, &t)| g.threshold_key == t),
        "CPU selection disagrees with the naive baseline"
    );
}

criterion_group!(benches, cpu);
criterion_main!(benches);
