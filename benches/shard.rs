//! `cargo bench --bench shard`: what sharded selection communicates, and what it costs on the CPU.
//!
//! 1. Bytes per step, measured from real sharded selections (`CpuSelector::comm_stats`): ranks as
//!    threads over `ThreadCollective`, flat (ZeRO) layouts, Llama-3.2-1B shapes scaled down 16x
//!    and Llama-2-7B shapes scaled down 96x, f32 and bf16 gradients, per-tensor and global scope,
//!    2, 4 and 8 ranks; beside them the bytes each rank would receive to all-gather the gradients
//!    (in their dtype) of the *full-size* model (the naive way to select exactly). What the exchange carries does
//!    not depend on the tensors' lengths, only on the number of groups, digits, ranks and of
//!    leaves cut by shard boundaries, so the scaled runs give the full-size bytes (the bench checks
//!    this: two scales, the same bytes).
//! 2. Selection time: one unsharded `CpuSelector` (all cores, with and without speculation)
//!    against N thread-ranks each selecting its slices (same rayon pool), Llama-3.2-1B / 16,
//!    median of 5 calls after a warm-up, rotating 3 gradient sets. Timed here, not in a test.

#[path = "../tests/common/mod.rs"]
mod common;

use std::ops::Range;
use std::time::Instant;

use common::shards::run_ranks;
use gradmask::{CpuSelector, GradElem, Scope, ShardLayout, Shards, TensorTable};
use half::bf16;

const RATIO: f64 = 0.2;

/// Bytes and calls of one sharded selection of `grads` per rank (all equal), for `world` ranks.
fn measured<T: GradElem>(
    table: &TensorTable,
    scope: Scope,
    grads: &[Vec<T>],
    world: usize,
) -> (u64, u64) {
    let stats = run_ranks(world, |rank, c| {
        let layout = ShardLayout::flat(table, world, rank).unwrap();
        let mine: Vec<Range<usize>> = (0..table.len()).map(|t| layout.local_range(t)).collect();
        let slices: Vec<&[T]> = grads
            .iter()
            .zip(&mine)
            .map(|(g, r)| &g[r.clone()])
            .collect();
        let mut selector =
            CpuSelector::sharded(table, scope, Shards::new(layout, c).unwrap()).unwrap();
        selector.select(&slices, RATIO).unwrap();
        let stats = selector.comm_stats();
        (stats.bytes, stats.calls)
    });
    assert!(stats.iter().all(|s| *s == stats[0]));
    stats[0]
}

fn bytes_table(name: &str, shapes: impl Fn(usize) -> Vec<(String, usize)>, scales: [usize; 2]) {
    let full: u64 = shapes(1).iter().map(|(_, n)| *n as u64).sum();
    let per_scale: Vec<(TensorTable, Vec<Vec<f32>>)> = scales
        .iter()
        .map(|&scale| {
            let shapes = shapes(scale);
            let lengths: Vec<usize> = shapes.iter().map(|(_, n)| *n).collect();
            (
                TensorTable::per_tensor(&lengths).unwrap(),
                common::llama_gradients(&shapes, 7),
            )
        })
        .collect();
    println!(
        "\n{name}: {} tensors, {full} entries at full size; measured at 1/{} and 1/{}",
        per_scale[0].0.len(),
        scales[0],
        scales[1]
    );
    println!("| scope | dtype | ranks | calls | bytes per rank per step | all-gather of the gradients (their dtype) per rank | ratio |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for scope in [Scope::PerTensor, Scope::Global] {
        for world in [2usize, 4, 8] {
            for dtype in ["f32", "bf16"] {
                let runs: Vec<(u64, u64)> = per_scale
                    .iter()
                    .map(|(table, grads)| match dtype {
                        "f32" => measured(table, scope, grads, world),
                        _ => {
                            let halves: Vec<Vec<bf16>> = grads
                                .iter()
                                .map(|g| g.iter().map(|&x| bf16::from_f32(x)).collect())
                                .collect();
                            measured(table, scope, &halves, world)
                        }
                    })
                    .collect();
                // Only the number of cut leaves (a boundary on a leaf edge cuts none) may differ.
                let (bytes, calls) = runs[0];
                let other = runs[1].0 as f64 / bytes as f64 - 1.0;
                let size = if dtype == "f32" { 4 } else { 2 };
                let gather = full * size * (world as u64 - 1) / world as u64;
                println!(
                    "| {scope:?} | {dtype} | {world} | {calls} | {:.3} MB ({:+.4}% at the other scale) | {:.2} GB | {:.0}x |",
                    bytes as f64 / 1e6,
                    100.0 * other,
                    gather as f64 / 1e9,
                    gather as f64 / bytes as f64
                );
            }
        }
    }
}

fn median(mut times: Vec<f64>) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn timing() {
    let shapes = common::llama_1b_shapes(16);
    let lengths: Vec<usize> = shapes.iter().map(|(_, n)| *n).collect();
    let table = TensorTable::per_tensor(&lengths).unwrap();
    let sets: Vec<Vec<Vec<f32>>> = (0..3)
        .map(|s| common::llama_gradients(&shapes, 40 + s))
        .collect();
    let total: usize = lengths.iter().sum();
    println!(
        "\nselection time, Llama-3.2-1B / 16 ({total} f32 entries), mask ratio {RATIO}, {} rayon threads, median of 5 after 2 warm-up calls",
        rayon::current_num_threads()
    );
    println!("| engine | scope | ms per selection |");
    println!("| --- | --- | --- |");
    for scope in [Scope::PerTensor, Scope::Global] {
        for speculate in [true, false] {
            let mut selector = CpuSelector::new(&table, scope);
            selector.set_speculation(speculate);
            let times: Vec<f64> = (0..7)
                .map(|i| {
                    let views: Vec<&[f32]> = sets[i % 3].iter().map(|g| &g[..]).collect();
                    let start = Instant::now();
                    selector.select(&views, RATIO).unwrap();
                    start.elapsed().as_secs_f64() * 1e3
                })
                .collect();
            let what = if speculate {
                "unsharded, speculating"
            } else {
                "unsharded, no speculation"
            };
            println!(
                "| {what} | {scope:?} | {:.1} |",
                median(times[2..].to_vec())
            );
        }
        for world in [1usize, 2, 4] {
            let times = run_ranks(world, |rank, c| {
                let layout = ShardLayout::flat(&table, world, rank).unwrap();
                let mine: Vec<Range<usize>> =
                    (0..table.len()).map(|t| layout.local_range(t)).collect();
                let mut selector =
                    CpuSelector::sharded(&table, scope, Shards::new(layout, c).unwrap()).unwrap();
                (0..7)
                    .map(|i| {
                        let views: Vec<&[f32]> = sets[i % 3]
                            .iter()
                            .zip(&mine)
                            .map(|(g, r)| &g[r.clone()])
                            .collect();
                        let start = Instant::now();
                        selector.select(&views, RATIO).unwrap();
                        start.elapsed().as_secs_f64() * 1e3
                    })
                    .collect::<Vec<f64>>()
            });
            // A step takes as long as its slowest rank.
            let slowest: Vec<f64> = (0..7)
                .map(|i| times.iter().map(|t| t[i]).fold(0.0, f64::max))
                .collect();
            println!(
                "| {world} thread-rank(s), flat layout | {scope:?} | {:.1} |",
                median(slowest[2..].to_vec())
            );
        }
    }
}

fn main() {
    // `cargo test --benches` runs benches with --test-ish flags: do nothing then.
    if std::env::args().any(|a| a == "--test" || a == "--list") {
        return;
    }
    bytes_table("Llama-3.2-1B", common::llama_1b_shapes, [16, 64]);
    bytes_table("Llama-2-7B", common::llama_7b_shapes, [96, 384]);
    timing();
}
