//! The CPU optimizer step on Llama-3.2-1B-shaped tensors (146 tensors, every length divided by
//! `SCALE`, about 31M entries): the GMT step (selection + masked AdamW) against plain AdamW
//! (`mask_ratio = 0`: the non-finite/norm scan + the same fused update), in f32 and in mixed
//! precision (bf16 parameters with f32 master weights and bf16 gradients; bf16 with stochastic
//! rounding).
//!
//! Throughput counts 28 bytes per parameter for every variant, the traffic of a fused AdamW step
//! (f32: read g, p, m, v, write p, m, v; mixed: read bf16 g, f32 master, m, v, write bf16 p, master,
//! m, v), so GB/s compare directly and the ratio of two GB/s is the ratio of their times.
//! After criterion, a summary prints the selection's own time, the GMT step with mask-stability
//! tracking against the same step without it, then the medians of alternating plain and GMT steps
//! and their ratio.
//!
//! Run: `cargo bench --bench step`. Results: benches/NOTES.md, "step (CPU)".

#[path = "../../tests/common/mod.rs"]
mod common;
mod cuda;

use std::time::Instant;

use common::adamw_ref::{views, views_mut};
use common::{draw, llama_1b_shapes, Dist};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use gradmask::{AdamWConfig, CpuSelector, GmtAdamW, MaskConfig, MaskedUpdate, Scope, TensorTable};
use half::bf16;

/// Divides every Llama-3.2-1B length: 1.24B / 40 = 31M entries.
const SCALE: usize = 40;
/// The GMT step's mask ratio.
const RATIO: f64 = 0.2;
const BYTES_PER_PARAM: u64 = 28;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Precision {
    F32,
    Bf16Master,
    Bf16Stochastic,
}

/// One model's buffers and two optimizers over them.
struct Setup {
    lengths: Vec<usize>,
    params: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    params_bf16: Vec<Vec<bf16>>,
    grads_bf16: Vec<Vec<bf16>>,
}

impl Setup {
    fn new() -> Self {
        let lengths: Vec<usize> = llama_1b_shapes(SCALE).into_iter().map(|(_, n)| n).collect();
        let dists = [Dist::LogNormal, Dist::Normal];
        let grads: Vec<Vec<f32>> = lengths
            .iter()
            .enumerate()
            .map(|(t, &n)| draw(dists[t % 2], n, 100 + t as u64))
            .collect();
        let params: Vec<Vec<f32>> = lengths
            .iter()
            .enumerate()
            .map(|(t, &n)| draw(Dist::Normal, n, 500 + t as u64))
            .collect();
        let to_bf16 = |v: &[Vec<f32>]| -> Vec<Vec<bf16>> {
            v.iter()
                .map(|t| t.iter().map(|&x| bf16::from_f32(x)).collect())
                .collect()
        };
        Setup {
            params_bf16: to_bf16(&params),
            grads_bf16: to_bf16(&grads),
            lengths,
            params,
            grads,
        }
    }

    fn total(&self) -> u64 {
        self.lengths.iter().map(|&n| n as u64).sum()
    }

    fn optimizer(&self, ratio: f64) -> GmtAdamW {
        let table = TensorTable::per_tensor(&self.lengths).unwrap();
        let mask = MaskConfig {
            mask_ratio: ratio,
            scope: Scope::PerTensor,
            masked: MaskedUpdate::ZeroGrad,
        };
        let config = AdamWConfig {
            weight_decay: 0.01,
            max_grad_norm: Some(1.0),
            ..AdamWConfig::default()
        };
        GmtAdamW::new(table, config, mask).unwrap()
    }

    fn step(&mut self, opt: &mut GmtAdamW, precision: Precision) {
        let lr = 1e-6;
        let report = match precision {
            Precision::F32 => opt.step(&mut views_mut(&mut self.params), &views(&self.grads), lr),
            Precision::Bf16Master => {
                let params = &mut views_mut(&mut self.params_bf16);
                opt.step_bf16_master(params, &views(&self.grads_bf16), lr)
            }
            Precision::Bf16Stochastic => {
                let params = &mut views_mut(&mut self.params_bf16);
                opt.step_bf16_stochastic(params, &views(&self.grads_bf16), lr, 7)
            }
        };
        assert!(!report.unwrap().skipped);
    }
}

const PRECISIONS: [Precision; 3] = [
    Precision::F32,
    Precision::Bf16Master,
    Precision::Bf16Stochastic,
];

fn bench_step(c: &mut Criterion) {
    let mut setup = Setup::new();
    let mut group = c.benchmark_group("step_cpu");
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_secs(1));
    group.measurement_time(std::time::Duration::from_secs(4));
    group.throughput(Throughput::Bytes(BYTES_PER_PARAM * setup.total()));
    for precision in PRECISIONS {
        for (name, ratio) in [("plain", 0.0), ("gmt", RATIO)] {
            let mut opt = setup.optimizer(ratio);
            let id = BenchmarkId::new(name, format!("{precision:?}"));
            group.bench_function(id, |b| b.iter(|| setup.step(&mut opt, precision)));
        }
    }
    group.finish();
}

/// Median seconds of one step of `plain` and of `gmt`, over `runs` alternating pairs after two
/// warm-up steps each. Alternating keeps the ratio fair when other work shares the machine.
fn median_steps(
    setup: &mut Setup,
    plain: &mut GmtAdamW,
    gmt: &mut GmtAdamW,
    precision: Precision,
    runs: usize,
) -> (f64, f64) {
    for _ in 0..2 {
        setup.step(plain, precision);
        setup.step(gmt, precision);
    }
    let mut time = |opt: &mut GmtAdamW| {
        let start = Instant::now();
        setup.step(opt, precision);
        start.elapsed().as_secs_f64()
    };
    let (mut t_plain, mut t_gmt) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        t_plain.push(time(plain));
        t_gmt.push(time(gmt));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(t_plain), median(t_gmt))
}

fn summary() {
    let mut setup = Setup::new();
    let (total, threads) = (setup.total(), rayon::current_num_threads());
    println!("\nstep (CPU): {total} entries in 146 tensors (Llama-3.2-1B / {SCALE}), {threads} threads, GMT mask_ratio {RATIO}, 28 B/param");
    let table = TensorTable::per_tensor(&setup.lengths).unwrap();
    let mut selector = CpuSelector::new(&table, Scope::PerTensor);
    for (name, dtype_grads) in [("f32", false), ("bf16", true)] {
        let mut times: Vec<f64> = (0..9)
            .map(|_| {
                let start = Instant::now();
                if dtype_grads {
                    selector.select(&views(&setup.grads_bf16), RATIO).unwrap();
                } else {
                    selector.select(&views(&setup.grads), RATIO).unwrap();
                }
                start.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        println!(
            "selection alone ({name} gradients): {:.1} ms",
            times[4] * 1e3
        );
    }
    // Mask-stability tracking (off by default): the same GMT step with and without it.
    let mut gmt = setup.optimizer(RATIO);
    let mut tracked = setup.optimizer(RATIO);
    tracked.track_stability(true);
    let (t_gmt, t_tracked) = median_steps(&mut setup, &mut gmt, &mut tracked, Precision::F32, 15);
    println!(
        "F32 gmt {:.1} ms, with mask stability tracked {:.1} ms: +{:.1} ms ({:+.0}%)",
        t_gmt * 1e3,
        t_tracked * 1e3,
        (t_tracked - t_gmt) * 1e3,
        (t_tracked / t_gmt - 1.0) * 100.0
    );
    for precision in PRECISIONS {
        let mut plain = setup.optimizer(0.0);
        let mut gmt = setup.optimizer(RATIO);
        let (t_plain, t_gmt) = median_steps(&mut setup, &mut plain, &mut gmt, precision, 15);
        let gbps = |t: f64| (BYTES_PER_PARAM * total) as f64 / t / 1e9;
        println!(
            "{precision:?}: plain {:.1} ms ({:.2} GB/s), gmt {:.1} ms ({:.2} GB/s), gmt/plain {:.2}x",
            t_plain * 1e3,
            gbps(t_plain),
            t_gmt * 1e3,
            gbps(t_gmt),
            t_gmt / t_plain
        );
    }
}

criterion_group!(benches, bench_step);
criterion_group!(cuda_benches, cuda::cuda);

fn main() {
    benches();
    cuda_benches();
    Criterion::default().configure_from_args().final_summary();
    // Not when profiling one benchmark (`--profile-time`) or when a filter picks some.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args
        .iter()
        .any(|a| a == "--profile-time" || !a.starts_with('-'))
    {
        summary();
    }
}
