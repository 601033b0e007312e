//! # finetune_llama: Gradient-Mask Tuning of a Llama, end to end, with the paper's baselines
//!
//! `cargo run --release --example finetune_llama` trains a small built-in Llama on generated
//! GSM8K-like word problems with SFT, GMT and random mask, then prints a comparison table
//! (held-out exact match, held-out loss, step time). See README.md, "Example trainer".
//!
//! Data flow (DESIGN.md section 6) and where each part lives:
//! - `cli.rs`: options; `setup.rs`: from options to model, data and folders; `cpu.rs`: FTZ/DAZ,
//!   thread counts, allocator.
//! - `problems.rs`: the word-problem generator; `data.rs`: JSONL, split, tokens, batches.
//! - `tokenizer.rs`: character-level and Hugging Face tokenizers.
//! - `config.rs`, `model.rs`: our differentiable Llama; `hf.rs`, `gguf.rs`: loading (and saving).
//! - `train.rs`: the loop; `optim.rs`: the only caller of the crate's `GmtAdamW`; `methods.rs`:
//!   SFT, GMT, random, HFT, one-off drop as optimizer set-ups.
//! - `eval.rs`: loss, exact match, perplexity; `checkpoint.rs`: save and `--resume`.
//! - `plan.rs`: the runs of an invocation (`--seeds`, `--sweep-mask-ratio`) and their folders;
//!   `runs.rs`: runs them on one loaded model and data set (SFT shared per seed).
//! - `metrics.rs`, `report.rs`, `plot.rs`: metrics.jsonl, summary.json, the table, PNG plots;
//!   `stats.rs`, `aggregate.rs`: spreads over seeds and paired differences against SFT;
//!   `outputs.rs`: what a finished invocation writes; `sweep_plot.rs`: mask_sweep.png.

mod aggregate;
mod checkpoint;
mod cli;
mod config;
mod cpu;
mod data;
mod eval;
mod gguf;
#[cfg(feature = "cuda")]
mod gpu;
mod hf;
mod methods;
mod metrics;
mod model;
mod optim;
mod outputs;
mod plan;
mod plot;
mod problems;
mod report;
mod runs;
mod setup;
mod shards;
mod stats;
mod sweep_plot;
#[cfg(test)]
mod tests;
mod tokenizer;
mod train;

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;

use cli::{Args, Method};
use model::Llama;
use plan::Plan;
use report::{write_json, MethodResult};
pub use setup::builtin_config;
use setup::{device, load_data, load_examples, load_model, prepare_out, train_config};
use tokenizer::Tok;
use train::{eval_subset, set_params, DataSet, TrainConfig};

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

/// Trains and evaluates one method (one-off reuses the SFT run of this process when there is one);
/// `label` names the run in progress lines.
#[allow(clippy::too_many_arguments)]
fn run_method(
    method: Method,
    args: &Args,
    model: &Llama,
    tok: &Tok,
    data: &DataSet,
    pretrained: &[Vec<f32>],
    dir: &Path,
    sft_run: &mut Option<train::Outcome>,
    label: &str,
) -> Result<Option<MethodResult>> {
    let started = Instant::now();
    let cfg = TrainConfig {
        label: label.to_string(),
        ..train_config(args)
    };
    set_params(model, pretrained)?;
    let outcome = match (method, sft_run.as_ref()) {
        (Method::Oneoff, Some(sft)) => {
            println!("[oneoff] reusing this run's SFT weights");
            let sft_metrics =
                std::fs::read_to_string(dir.with_file_name("sft").join("metrics.jsonl"))?;
            std::fs::write(
                dir.join("metrics.jsonl"),
                sft_metrics.replace("\"method\":\"sft\"", "\"method\":\"oneoff\""),
            )?;
            sft.clone()
        }
        _ => {
            let spec = methods::optim_spec(method, args, model);
            train::train(
                method.name(),
                model,
                tok,
                data,
                &spec,
                &cfg,
                dir,
                args.resume,
            )?
        }
    };
    if outcome.stopped {
        return Ok(None);
    }
    if method == Method::Sft {
        *sft_run = Some(outcome.clone());
    }
    let mut params = outcome.params.clone();
    if method == Method::Oneoff {
        let reset = methods::drop_small_delta(&mut params, pretrained, args.mask_ratio)?;
        println!(
            "[oneoff] reset {reset} entries with the smallest |delta| to their pretrained values"
        );
    }
    set_params(model, &params)?;
    let (heldout_loss, em) = train::heldout_scores(model, tok, data, &cfg)?;
    let mask_ratio = if plan::masks(method) {
        args.mask_ratio
    } else {
        0.0
    };
    let mut log = metrics::Metrics::open(&dir.join("metrics.jsonl"), Some(cfg.steps))?;
    log.write(serde_json::json!({"kind": "eval", "method": method.name(), "seed": args.seed, "mask_ratio": mask_ratio, "step": cfg.steps, "heldout_loss": heldout_loss, "exact_match": em}))?;
    println!(
        "[{label}] held-out loss {heldout_loss:.4}, exact match {:.1}%",
        em * 100.0
    );
    let result = MethodResult {
        method: method.name().into(),
        mask_ratio,
        seed: args.seed,
        heldout_exact_match: em,
        heldout_loss,
        step_s: outcome.step_s,
        fwd_s: outcome.fwd_s,
        bwd_s: outcome.bwd_s,
        opt_s: outcome.opt_s,
        tokens_per_s: outcome.tokens_per_s,
        first_train_loss: outcome.train_losses.first().copied().unwrap_or(f64::NAN),
        final_train_loss: outcome.train_losses.last().copied().unwrap_or(f64::NAN),
        steps: cfg.steps,
        wall_s: started.elapsed().as_secs_f64(),
        mask_stability: outcome.mask_stability,
    };
    write_json(&dir.join("result.json"), &result)?;
    Ok(Some(result))
}
