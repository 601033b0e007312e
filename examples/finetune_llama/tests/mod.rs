//! End-to-end tests of the example trainer on the micro model (each well under a second here):
//! - `training.rs`: a 30-step GMT run (the loss falls, kept counts match the mask ratio, a run
//!   killed after 15 steps and resumed from its step-10 checkpoint reproduces the uninterrupted
//!   loss curve); every baseline in one `--compare`; real gradients; cached generation;
//! - `shards.rs`: `--shards 1/2/3` repeat the unsharded lines and weights bit for bit (SFT, GMT,
//!   random mask, HFT); a 5-rank run killed and resumed does too; a resume with another N fails;
//! - `gpu.rs` (`--features cuda`): the micro run with `--cuda`;
//! - `formats.rs`: HF directories (round trip, an error for each kind of bad input) and GGUF (a
//!   small Q4_1 file written by the test loads back dequantized, Q/K unpermuted, tokenizer rebuilt).

mod formats;
#[cfg(feature = "cuda")]
mod gpu;
mod seeds;
mod shards;
mod training;

use std::path::{Path, PathBuf};

use clap::Parser;

use crate::cli::Args;
use crate::experiment::cpu;
use crate::model::hf;
use crate::model::param_specs;
use crate::train::metrics;

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("finetune-llama-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn micro_args(out: &Path, extra: &[&str]) -> Args {
    let mut argv: Vec<String> = "finetune_llama --size micro --method gmt --mask-ratio 0.5 --steps 30 --micro-batch 8 \
         --lr 1e-2 --examples 300 --heldout 16 --eval-every 0 --eval-samples 4 --max-new-tokens 6 --save-every 10 --quiet --out"
        .split_whitespace()
        .map(String::from)
        .collect();
    argv.push(out.display().to_string());
    argv.extend(extra.iter().map(|s| s.to_string()));
    Args::parse_from(argv)
}

pub fn threads() -> cpu::Threads {
    cpu::Threads {
        threads: 2,
        candle_threads: 1,
        ftz: false,
    }
}

pub fn train_lines(out: &Path, method: &str) -> Vec<serde_json::Value> {
    let lines = metrics::read_lines(&out.join(method).join("metrics.jsonl")).unwrap();
    lines.into_iter().filter(|v| v["kind"] == "train").collect()
}

/// The training losses of `method` in the run at `out`, step by step.
pub fn train_losses(out: &Path, method: &str) -> Vec<f64> {
    let lines = train_lines(out, method);
    lines.iter().map(|v| v["loss"].as_f64().unwrap()).collect()
}

/// Checks the 30-step GMT micro run (mask ratio 0.5, per tensor) in `out` and returns its training
/// losses: the loss falls, and every step keeps half of each tensor (ties at the threshold may
/// only add a few).
pub fn assert_learns_and_masks_half(out: &Path) -> Vec<f64> {
    let lines = train_lines(out, "gmt");
    assert_eq!(lines.len(), 30);
    let losses: Vec<f64> = lines.iter().map(|v| v["loss"].as_f64().unwrap()).collect();
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    assert!(
        mean(&losses[25..]) < 0.8 * mean(&losses[..5]),
        "loss did not fall: {losses:?}"
    );
    let ckpt = out.join("gmt/checkpoints/step-000030");
    let (cfg, _) = hf::read_config(&ckpt.join("config.json")).unwrap();
    let sizes: Vec<u64> = param_specs(&cfg)
        .iter()
        .map(|(_, shape, _, _)| shape.iter().product::<usize>() as u64)
        .collect();
    for line in &lines {
        // Per tensor: target = len - floor(0.5 len).
        let (kept, target, len) = (
            line["kept"].as_u64().unwrap(),
            line["target"].as_u64().unwrap(),
            line["len"].as_u64().unwrap(),
        );
        assert_eq!(len, sizes.iter().sum::<u64>());
        assert_eq!(target, sizes.iter().map(|n| n - n / 2).sum::<u64>());
        assert!(
            kept >= target && (kept - target) as f64 <= 0.01 * len as f64,
            "kept {kept}, target {target}"
        );
    }
    losses
}
