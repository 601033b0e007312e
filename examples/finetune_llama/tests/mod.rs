//! End-to-end tests of the example trainer on the micro model (each well under a second here):
//! - `training.rs`: a 30-step GMT run (the loss falls, kept counts match the mask ratio, a run
//!   killed after 15 steps and resumed from its step-10 checkpoint reproduces the uninterrupted
//!   loss curve); every baseline in one `--compare`; real gradients; cached generation;
//! - `gpu.rs` (`--features cuda`): the device optimizer against the CPU engine bit for bit, and the
//!   micro run with `--cuda`;
//! - `formats.rs`: HF directories (round trip, an error for each kind of bad input) and GGUF (a
//!   small Q4_1 file written by the test loads back dequantized, Q/K unpermuted, tokenizer rebuilt).

mod formats;
#[cfg(feature = "cuda")]
mod gpu;
mod training;

use std::path::{Path, PathBuf};

use clap::Parser;

use crate::cli::Args;
use crate::{cpu, metrics};

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
