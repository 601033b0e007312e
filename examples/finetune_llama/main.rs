//! # finetune_llama: Gradient-Mask Tuning of a Llama, end to end, with the paper's baselines
//!
//! `cargo run --release --example finetune_llama` trains a small built-in Llama on generated
//! GSM8K-like word problems with SFT, GMT and random mask, then prints a comparison table
//! (held-out exact match, held-out loss, step time). See README.md, "Example trainer".
//!
//! Data flow (DESIGN.md section 6) and where each part lives:
//! - `cli.rs`: options; `cpu.rs`: FTZ/DAZ and thread counts.
//! - `problems.rs`: the word-problem generator; `data.rs`: JSONL, split, tokens, batches.
//! - `tokenizer.rs`: character-level and Hugging Face tokenizers.
//! - `model.rs`: our differentiable Llama; `hf.rs`, `gguf.rs`: loading (and saving) weights.
//! - `train.rs`: the loop; `optim.rs`: the only caller of the crate's `GmtAdamW`
//!   (`standin_adamw.rs` stands in for it until branch `adamw` lands); `methods.rs`: SFT, GMT,
//!   random, HFT, one-off drop as optimizer set-ups.
//! - `eval.rs`: loss, exact match, perplexity; `checkpoint.rs`: save and `--resume`.
//! - `metrics.rs`, `report.rs`, `plot.rs`: metrics.jsonl, summary.json, the table, PNG plots.

mod checkpoint;
mod cli;
mod cpu;
mod data;
mod eval;
mod gguf;
mod hf;
mod methods;
mod metrics;
mod model;
mod optim;
mod plot;
mod problems;
mod report;
mod standin_adamw;
#[cfg(test)]
mod tests;
mod tokenizer;
mod train;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::Device;
use clap::Parser;

use cli::{Args, Method, Size};
use data::{split, tokenize, Example, Fields};
use model::{Llama, LlamaConfig};
use report::{write_json, MethodResult};
use tokenizer::Tok;
use train::{eval_subset, host_params, set_params, DataSet, TrainConfig};

fn main() -> ExitCode {
    let args = Args::parse();
    let threads = cpu::configure(args.threads, args.no_ftz, args.default_malloc);
    match run(&args, threads) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The built-in model: a Llama with grouped-query attention and a tied head.
pub fn builtin_config(size: Size, vocab_size: usize) -> LlamaConfig {
    let (hidden, inter, layers, heads, kv) = match size {
        Size::Small => (128, 344, 4, 4, 2),
        Size::Micro => (32, 64, 2, 2, 1),
    };
    LlamaConfig {
        vocab_size,
        hidden_size: hidden,
        intermediate_size: inter,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: Some(kv),
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        tie_word_embeddings: true,
        max_position_embeddings: 512,
        model_type: "llama".into(),
    }
}

fn device(args: &Args) -> Result<Device> {
    if !args.cuda {
        return Ok(Device::Cpu);
    }
    #[cfg(feature = "cuda")]
    return Ok(Device::new_cuda(0)?);
    #[cfg(not(feature = "cuda"))]
    bail!("--cuda needs a build with `--features cuda` (see README.md, \"Example trainer\")")
}

/// The model and its tokenizer; the built-in tokenizer's vocabulary comes from `examples`.
fn load_model(args: &Args, device: &Device, examples: &[Example]) -> Result<(Llama, Tok)> {
    if args.model == "builtin" {
        let texts = examples
            .iter()
            .flat_map(|e| [e.prompt.as_str(), e.response.as_str()]);
        let tok = Tok::words(texts, args.max_vocab)?;
        return Ok((
            Llama::init(
                builtin_config(args.size, tok.vocab_size()),
                args.seed,
                device,
            )?,
            tok,
        ));
    }
    let path = Path::new(&args.model);
    if path.is_dir() {
        hf::load_dir(path, device)
    } else if path.extension().is_some_and(|e| e == "gguf") {
        gguf::load(path, device)
    } else if !path.exists() {
        bail!("missing model file: {} does not exist", path.display())
    } else {
        bail!(
            "{}: expected `builtin`, a model directory or a .gguf file",
            path.display()
        )
    }
}

fn load_examples(args: &Args) -> Result<Vec<Example>> {
    let examples = match &args.data {
        None => problems::generate(args.examples, args.seed),
        Some(path) => {
            let mut fields = Fields::preset(&args.preset)?;
            if let Some(prompt) = &args.prompt_fields {
                fields.prompt = prompt.clone();
            }
            if let Some(response) = &args.response_field {
                fields.response = response.clone();
            }
            data::load_jsonl(path, &fields)?
        }
    };
    if examples.is_empty() {
        bail!("empty dataset: no examples to train on");
    }
    Ok(examples)
}

fn load_data(args: &Args, tok: &Tok, examples: Vec<Example>) -> Result<DataSet> {
    let (train, heldout_examples) = split(examples, args.heldout, args.seed)?;
    Ok(DataSet {
        train: tokenize(&train, tok, args.max_len)?,
        heldout: tokenize(&heldout_examples, tok, args.max_len)?,
        heldout_examples,
    })
}

fn prepare_out(args: &Args) -> Result<PathBuf> {
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("runs/finetune_llama").join(report::timestamp()));
    let occupied = out.exists() && std::fs::read_dir(&out)?.next().is_some();
    if args.resume && !occupied {
        bail!("--resume: {} holds no run to resume", out.display());
    }
    if occupied && !args.resume {
        if !args.overwrite {
            bail!("{} already exists; pass --resume to continue that run or --overwrite to replace it", out.display());
        }
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    Ok(out)
}

pub fn train_config(args: &Args) -> TrainConfig {
    TrainConfig {
        steps: args.steps,
        micro_batch: args.micro_batch,
        accum: args.accum.max(1),
        lr: args.lr,
        warmup_ratio: args.warmup_ratio,
        seed: args.seed,
        eval_every: args.eval_every,
        eval_samples: args.eval_samples,
        max_new_tokens: args.max_new_tokens,
        save_every: args.save_every,
        progress: !args.quiet,
        stop_after: args.stop_after,
    }
}

/// The whole run; returns one result per method.
pub fn run(args: &Args, threads: cpu::Threads) -> Result<Vec<MethodResult>> {
    let device = device(args)?;
    let examples = load_examples(args)?;
    let (model, tok) = load_model(args, &device, &examples)?;
    let n_params: usize = model.params.iter().map(|p| p.var.elem_count()).sum();
    println!(
        "model {}: {} layers, hidden {}, {:.2}M parameters, vocab {}; {} threads, denormals {}",
        args.model,
        model.cfg.num_hidden_layers,
        model.cfg.hidden_size,
        n_params as f64 / 1e6,
        tok.vocab_size(),
        threads.threads,
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
    let pretrained = host_params(&model)?;
    let methods = args.methods();
    let (mut results, mut sft_run) = (Vec::new(), None);
    for &method in &methods {
        let dir = out.join(method.name());
        std::fs::create_dir_all(&dir)?;
        if args.resume && dir.join("result.json").exists() {
            let result: MethodResult =
                serde_json::from_str(&std::fs::read_to_string(dir.join("result.json"))?)?;
            println!("[{}] already finished; kept its result", method.name());
            results.push(result);
            continue;
        }
        match run_method(
            method,
            args,
            &model,
            &tok,
            &data,
            &pretrained,
            &dir,
            &mut sft_run,
        )? {
            Some(result) => results.push(result),
            None => {
                println!(
                    "[{}] stopped after {} steps (--stop-after); continue with --resume",
                    method.name(),
                    args.stop_after.unwrap_or(0)
                );
                return Ok(results);
            }
        }
    }
    let names: Vec<String> = methods.iter().map(|m| m.name().to_string()).collect();
    report::merge_metrics(&out, &names)?;
    let runs = names
        .iter()
        .map(|m| {
            Ok((
                m.clone(),
                metrics::read_lines(&out.join(m).join("metrics.jsonl"))?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    plot::loss_plot(&out.join("loss.png"), &runs)?;
    plot::kept_plot(&out.join("kept_fraction.png"), &runs)?;
    let summary = serde_json::json!({
        "model": args.model, "parameters": n_params, "threads": threads.threads, "ftz": threads.ftz,
        "steps": args.steps, "micro_batch": args.micro_batch, "accum": args.accum, "lr": args.lr,
        "mask_ratio": args.mask_ratio, "scope": format!("{:?}", args.scope), "masked": format!("{:?}", args.masked),
        "seed": args.seed, "train_examples": data.train.len(), "heldout_examples": data.heldout.len(),
        "results": results,
    });
    write_json(&out.join("summary.json"), &summary)?;
    println!("\n{}", report::table(&results));
    println!(
        "wrote {}/{{metrics.jsonl, summary.json, loss.png, kept_fraction.png}}",
        out.display()
    );
    Ok(results)
}

/// Trains and evaluates one method (one-off reuses the SFT run of this process when there is one).
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
) -> Result<Option<MethodResult>> {
    let started = Instant::now();
    let cfg = train_config(args);
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
    let heldout_loss = eval::heldout_loss(model, &data.heldout, cfg.micro_batch * 2, tok.pad())?;
    let em = eval::exact_match(
        model,
        tok,
        eval_subset(data, &cfg),
        cfg.max_new_tokens,
        64,
        0,
    )?;
    let mut log = metrics::Metrics::open(&dir.join("metrics.jsonl"), Some(cfg.steps))?;
    log.write(serde_json::json!({"kind": "eval", "method": method.name(), "step": cfg.steps, "heldout_loss": heldout_loss, "exact_match": em}))?;
    println!(
        "[{}] held-out loss {heldout_loss:.4}, exact match {:.1}%",
        method.name(),
        em * 100.0
    );
    let result = MethodResult {
        method: method.name().into(),
        mask_ratio: if matches!(method, Method::Gmt | Method::Random | Method::Oneoff) {
            args.mask_ratio
        } else {
            0.0
        },
        heldout_exact_match: em,
        heldout_loss,
        step_s: outcome.step_s,
        fwd_bwd_s: outcome.fwd_bwd_s,
        opt_s: outcome.opt_s,
        tokens_per_s: outcome.tokens_per_s,
        first_train_loss: outcome.train_losses.first().copied().unwrap_or(f64::NAN),
        final_train_loss: outcome.train_losses.last().copied().unwrap_or(f64::NAN),
        steps: cfg.steps,
        wall_s: started.elapsed().as_secs_f64(),
    };
    write_json(&dir.join("result.json"), &result)?;
    Ok(Some(result))
}
