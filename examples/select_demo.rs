//! `cargo run --release --example select_demo`: the exact GMT selection over a Llama-shaped gradient
//! set on the CPU engine, per tensor and globally, with the kept fraction and the time of each.
//!
//! Flags: `--scale N` divides every Llama-3.2-1B tensor length by N (default 48, ~26M entries);
//! `--mask-ratio R` (default 0.2).

#[path = "../tests/common/mod.rs"]
mod common;

use gradmask::{CpuSelector, Scope, TensorTable};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (mut scale, mut mask_ratio) = (48usize, 0.2f64);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--scale" => scale = value.parse()?,
            "--mask-ratio" => mask_ratio = value.parse()?,
            _ => return Err(format!("unknown flag {flag} (use --scale N, --mask-ratio R)").into()),
        }
    }
    let shapes = common::llama_1b_shapes(scale.max(1));
    let lengths: Vec<usize> = shapes.iter().map(|s| s.1).collect();
    let total: usize = lengths.iter().sum();
    println!(
        "{} tensors, {total} gradient entries, mask ratio {mask_ratio}",
        shapes.len()
    );

    let grads = common::llama_gradients(&shapes, 42);
    let views: Vec<&[f32]> = grads.iter().map(|g| &g[..]).collect();
    let table = TensorTable::per_tensor(&lengths)?;

    for scope in [Scope::PerTensor, Scope::Global] {
        let mut selector = CpuSelector::new(&table, scope);
        selector.select(&views, mask_ratio)?; // warm-up
        let start = Instant::now();
        let selection = selector.select(&views, mask_ratio)?;
        let took = start.elapsed();
        let kept: u64 = selection.groups.iter().map(|g| g.kept).sum();
        println!(
            "{scope:?}: {} groups, kept {kept} of {total} ({:.4}), grad norm {:.4e}, {:.1} ms ({:.2} GB/s)",
            selection.groups.len(),
            kept as f64 / total as f64,
            selection.grad_norm(),
            took.as_secs_f64() * 1e3,
            total as f64 * 4.0 / took.as_secs_f64() / 1e9
        );
        for (name, stats) in shapes.iter().map(|s| &s.0).zip(&selection.groups).take(3) {
            println!(
                "  {name}: threshold {:.4e}, kept {} of {}",
                stats.threshold, stats.kept, stats.len
            );
        }
    }
    Ok(())
}
