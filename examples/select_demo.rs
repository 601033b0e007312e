//! `cargo run --release --example select_demo`: the exact GMT selection over a Llama-shaped gradient
//! set, per tensor and globally, with the kept fraction and the time of each. Where a GPU and the
//! kernels are present it also runs the CUDA engine and checks that it agrees bit for bit.
//!
//! Flags:
//! - `--scale N`: divides every Llama-3.2-1B tensor length by N (default 48, ~26M entries);
//! - `--mask-ratio R` (default 0.2);
//! - `--data lognormal|hash` (default lognormal): `hash` is the integer-hash data that
//!   `scripts/peers/torch_select.py` regenerates bit for bit;
//! - `--json PATH`: writes the per-tensor thresholds (for the torch peer's `--compare`).

#[path = "../tests/common/mod.rs"]
mod common;

use gradmask::{CpuSelector, Scope, Selection, TensorTable};
use std::fmt::Write as _;
use std::time::Instant;

struct Args {
    scale: usize,
    mask_ratio: f64,
    hash_data: bool,
    json: Option<String>,
}

fn parse_args() -> Result<Args, Box<dyn std::error::Error>> {
    let mut args = Args {
        scale: 48,
        mask_ratio: 0.2,
        hash_data: false,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--scale" => args.scale = value.parse::<usize>()?.max(1),
            "--mask-ratio" => args.mask_ratio = value.parse()?,
            "--data" if value == "hash" || value == "lognormal" => args.hash_data = value == "hash",
            "--json" => args.json = Some(value),
            _ => {
                return Err(format!("bad flag {flag} {value} (see the file's doc comment)").into())
            }
        }
    }
    Ok(args)
}

fn report(label: &str, selection: &Selection, total: usize, took: std::time::Duration) {
    let kept: u64 = selection.groups.iter().map(|g| g.kept).sum();
    println!(
        "{label}: {} groups, kept {kept} of {total} ({:.4}), grad norm {:.4e}, {:.1} ms ({:.2} GB/s of gradients)",
        selection.groups.len(),
        kept as f64 / total as f64,
        selection.grad_norm(),
        took.as_secs_f64() * 1e3,
        total as f64 * 4.0 / took.as_secs_f64() / 1e9
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let shapes = common::llama_1b_shapes(args.scale);
    let lengths: Vec<usize> = shapes.iter().map(|s| s.1).collect();
    let total: usize = lengths.iter().sum();
    let data = if args.hash_data { "hash" } else { "log-normal" };
    println!(
        "{} tensors, {total} {data} gradient entries, mask ratio {}",
        shapes.len(),
        args.mask_ratio
    );
    let grads = if args.hash_data {
        common::hash_gradients(&lengths)
    } else {
        common::llama_gradients(&shapes, 42)
    };
    let views: Vec<&[f32]> = grads.iter().map(|g| &g[..]).collect();
    let table = TensorTable::per_tensor(&lengths)?;

    for scope in [Scope::PerTensor, Scope::Global] {
        let mut selector = CpuSelector::new(&table, scope);
        selector.select(&views, args.mask_ratio)?; // warm-up: sizes nothing, fills the window
        let start = Instant::now();
        let selection = selector.select(&views, args.mask_ratio)?.clone();
        report(
            &format!("cpu {scope:?}"),
            &selection,
            total,
            start.elapsed(),
        );
        for (name, stats) in shapes.iter().map(|s| &s.0).zip(&selection.groups).take(3) {
            println!(
                "  {name}: threshold {:.4e}, kept {} of {}",
                stats.threshold, stats.kept, stats.len
            );
        }
        compare_with_cuda(&table, scope, &grads, args.mask_ratio, &selection, total)?;
        if let (Some(path), Scope::PerTensor) = (&args.json, scope) {
            let mut json = String::from("{\"mask_ratio\": ");
            write!(json, "{}, \"tensors\": [", args.mask_ratio)?;
            for (i, ((name, len), stats)) in shapes.iter().zip(&selection.groups).enumerate() {
                let sep = if i == 0 { "" } else { ", " };
                write!(json, "{sep}{{\"name\": \"{name}\", \"len\": {len}, \"threshold_bits\": {}, \"kept\": {}}}", stats.threshold_key, stats.kept)?;
            }
            json.push_str("]}\n");
            std::fs::write(path, json)?;
            println!("wrote the per-tensor thresholds to {path}");
        }
    }
    Ok(())
}

/// Runs the CUDA engine on the same gradients when a GPU is there, and checks it agrees.
fn compare_with_cuda(
    table: &TensorTable,
    scope: Scope,
    grads: &[Vec<f32>],
    mask_ratio: f64,
    cpu: &Selection,
    total: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let stream = match gradmask::cuda::default_stream(0) {
        Ok(stream) => stream,
        Err(e) => {
            println!("  (cuda: not run: {e})");
            return Ok(());
        }
    };
    let device: Vec<_> = grads
        .iter()
        .map(|g| stream.clone_htod(g))
        .collect::<Result<_, _>>()?;
    let mut selector = gradmask::cuda::CudaSelector::new(stream.clone(), table, scope)?;
    selector.select(&device, mask_ratio)?;
    stream.synchronize()?;
    let start = Instant::now();
    selector.select(&device, mask_ratio)?;
    stream.synchronize()?;
    let took = start.elapsed();
    selector.copy_stats_async()?;
    let gpu = selector.stats()?;
    report(&format!("cuda {scope:?}"), &gpu, total, took);
    let same = cpu
        .groups
        .iter()
        .zip(&gpu.groups)
        .all(|(a, b)| (a.threshold_key, a.kept) == (b.threshold_key, b.kept));
    if !same {
        return Err(format!("cuda {scope:?}: thresholds differ from the CPU engine").into());
    }
    println!("  cuda {scope:?}: thresholds and kept counts equal the CPU engine's");
    Ok(())
}
