//! # finetune_llama: Gradient-Mask Tuning of a Llama, end to end, with the paper's baselines
//!
//! `cargo run --release --example finetune_llama` trains a small built-in Llama on generated
//! GSM8K-like word problems with SFT, GMT and random mask, then prints a comparison table
//! (held-out exact match, held-out loss, step time). See README.md, "Example trainer".
//!
//! Data flow (DESIGN.md section 6), by concern; each folder's `mod.rs` lists its files:
//! - `model/`: our differentiable Llama, its tokenizers, Hugging Face and GGUF files;
//! - `data/`: the word-problem generator, user JSONL, split, tokens, batches;
//! - `train/`: one method's training: the loop, the methods as set-ups of the crate's candle
//!   optimizer (`gradmask::candle::GmtAdamW`, the only optimizer: this example has no optimizer
//!   code of its own; `--shards N` is its sharded state, N CPU ranks as threads), evaluation,
//!   checkpoints, `metrics.jsonl`;
//! - `report/`: results, the comparison table, spreads over seeds, plots;
//! - `experiment/`: one invocation: process set-up, loading, the plan of runs, running them, the
//!   outputs;
//! - `cli.rs`: the options.
//!
//! Dependencies point one way: `model` <- `data` <- `train` <- `report` <- `experiment` <- `main`
//! (`cli` is used by all and uses none).

mod cli;
mod data;
mod experiment;
mod model;
mod report;
#[cfg(test)]
mod tests;
mod train;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;

use cli::Args;
use experiment::plan::Plan;
pub use experiment::setup::builtin_config;
use experiment::setup::{device, load_data, load_examples, load_model, prepare_out, train_config};
use experiment::{cpu, outputs, runs};
use report::{aggregate, write_json, MethodResult};
use train::{eval, eval_subset};

fn main() -> ExitCode {
    let args = Args::parse();
    let threads = cpu::configure(
        args.threads,
        args.candle_threads,
        args.no_ftz,
        args.default_malloc,
    );
    match run(&args, threads) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The whole run; returns one result per method.
pub fn run(args: &Args, threads: cpu::Threads) -> Result<Vec<MethodResult>> {
    let plan = Plan::new(args)?; // bad flags fail here, before anything loads
    let device = device(args)?;
    let examples = load_examples(args)?;
    let (model, tok) = load_model(args, &device, &examples)?;
    let n_params: usize = model.params.iter().map(|p| p.var.elem_count()).sum();
    println!(
        "model {}: {} layers, hidden {}, {:.2}M parameters, vocab {}; {} rayon + {} candle threads, denormals {}",
        args.model,
        model.cfg.num_hidden_layers,
        model.cfg.hidden_size,
        n_params as f64 / 1e6,
        tok.vocab_size(),
        threads.threads,
        threads.candle_threads,
        if threads.ftz { "flushed" } else { "kept" }
    );
    if args.model != "builtin" {
        let t0 = Instant::now();
        let ppl = eval::perplexity(&model, &tok, eval::PARAGRAPH)?;
        println!(
            "sanity check: perplexity {ppl:.2} on a fixed English paragraph ({:.1} s)",
            t0.elapsed().as_secs_f64()
        );
    }
    let data = load_data(args, &tok, examples)?;
    println!(
        "data: {} training and {} held-out examples",
        data.train.len(),
        data.heldout.len()
    );
    let cfg = train_config(args);
    if args.eval_only {
        let loss = eval::heldout_loss(&model, &data.heldout, cfg.micro_batch, tok.pad())?;
        let em = eval::exact_match(
            &model,
            &tok,
            eval_subset(&data, &cfg),
            cfg.max_new_tokens,
            64,
            args.show,
        )?;
        println!("held-out loss {loss:.4}, exact match {:.1}%", em * 100.0);
        return Ok(Vec::new());
    }
    let out = prepare_out(args)?;
    println!("output: {}", out.display());
    write_json(&out.join("args.json"), &format!("{args:?}"))?;
    let executed = runs::execute(&plan, args, &model, &tok, &data, &out)?;
    if executed.stopped {
        return Ok(executed.results);
    }
    let summary = serde_json::json!({
        "model": args.model, "parameters": n_params, "threads": threads.threads, "candle_threads": threads.candle_threads, "ftz": threads.ftz,
        "steps": args.steps, "micro_batch": args.micro_batch, "accum": args.accum, "lr": train_config(args).lr,
        "mask_ratio": args.mask_ratio, "scope": format!("{:?}", args.scope), "masked": format!("{:?}", args.masked),
        "seed": args.seed, "seeds": plan.seeds, "sweep_mask_ratio": args.sweep_mask_ratio,
        "train_examples": data.train.len(), "heldout_examples": data.heldout.len(),
        "before_finetuning": executed.before, "aggregate": aggregate::aggregate(&executed.results),
        "results": executed.results,
    });
    outputs::write(&out, args, &plan, &executed, &summary)?;
    Ok(executed.results)
}
