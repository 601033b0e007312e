//! The training loop of one method: micro-batches accumulated over N, then one step of the crate's
//! masked AdamW (through `optim.rs`), a cosine schedule with linear warm-up, periodic evaluation,
//! checkpoints and `--resume`, metrics and a progress bar.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::Tensor;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::checkpoint;
use crate::data::{make_batch, micro_batch_indices, Example, Tokenized};
use crate::eval::{exact_match, heldout_loss, mean_nll};
use crate::metrics::{kept_by_layer, stability_by_layer, Metrics};
use crate::model::Llama;
use crate::optim::{OptimSpec, Optimizer};
use crate::tokenizer::Tok;

/// Loop settings shared by every method of a run.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub steps: u64,
    pub micro_batch: usize,
    pub accum: usize,
    pub lr: f64,
    pub warmup_ratio: f64,
    pub seed: u64,
    pub eval_every: u64,
    pub eval_samples: usize,
    pub max_new_tokens: usize,
    pub save_every: u64,
    pub progress: bool,
    /// Stop after this many steps without finishing, as if killed (for testing `--resume`).
    pub stop_after: Option<u64>,
    /// Names the run in progress lines (`run 3/12 gmt r0.2 seed 43`); the method when empty.
    pub label: String,
}

/// The data a run trains and evaluates on.
pub struct DataSet {
    pub train: Vec<Tokenized>,
    pub heldout: Vec<Tokenized>,
    pub heldout_examples: Vec<Example>,
}

/// What one training run measured.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub train_losses: Vec<f64>,
    /// Median seconds per step in this process: forward (batch upload and loss included),
    /// backward (gradient accumulation included), the optimizer step (with its report), total.
    pub fwd_s: f64,
    pub bwd_s: f64,
    pub opt_s: f64,
    pub step_s: f64,
    pub tokens_per_s: f64,
    pub steps_run: u64,
    /// True when `stop_after` ended the run early.
    pub stopped: bool,
    /// Mean mask stability over the second half of the steps (masking methods, when tracked).
    pub mask_stability: Option<f64>,
    /// Final weights, in parameter order.
    pub params: Vec<Vec<f32>>,
}

/// Learning rate at 0-based `step`: linear warm-up over `ceil(warmup_ratio * steps)` steps, then
/// cosine decay to 0.
pub fn lr_at(cfg: &TrainConfig, step: u64) -> f64 {
    let warmup = (cfg.warmup_ratio * cfg.steps as f64).ceil().max(1.0);
    let s = step as f64;
    if s < warmup {
        return cfg.lr * (s + 1.0) / warmup;
    }
    let progress = (s - warmup) / (cfg.steps as f64 - warmup).max(1.0);
    cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
}

/// Current weights as host buffers, in parameter order.
pub fn host_params(model: &Llama) -> Result<Vec<Vec<f32>>> {
    model
        .params
        .iter()
        .map(|p| Ok(p.var.flatten_all()?.to_vec1::<f32>()?))
        .collect()
}

/// Writes host buffers into the model's variables.
pub fn set_params(model: &Llama, host: &[Vec<f32>]) -> Result<()> {
    for (param, data) in model.params.iter().zip(host) {
        param
            .var
            .set(&Tensor::from_slice(data, param.var.shape(), &model.device)?)?;
    }
    Ok(())
}

/// Trains `model` with one method; its folder `dir` gets checkpoints and `metrics.jsonl`.
#[allow(clippy::too_many_arguments)]
pub fn train(
    method: &str,
    model: &Llama,
    tok: &Tok,
    data: &DataSet,
    spec: &OptimSpec,
    cfg: &TrainConfig,
    dir: &Path,
    resume: bool,
) -> Result<Outcome> {
    if data.train.is_empty() {
        bail!("empty dataset: no training examples");
    }
    let mut optimizer = Optimizer::new(model, spec)?;
    let mut start = 0;
    if resume {
        if let Some(state) = checkpoint::load_latest(dir, model, &mut optimizer)? {
            if state.total_steps != cfg.steps {
                bail!(
                    "{}: the checkpoint was made for {} steps, this run asks for {}",
                    dir.display(),
                    state.total_steps,
                    cfg.steps
                );
            }
            start = state.step;
        }
    }
    let mut metrics = Metrics::open(&dir.join("metrics.jsonl"), resume.then_some(start))?;
    let label = if cfg.label.is_empty() {
        method
    } else {
        &cfg.label
    };
    let bar = progress_bar(cfg, label, start);
    let mut out = Outcome::default();
    let mut stabilities: Vec<(u64, f64)> = Vec::new(); // (step, whole-model mask stability)
    if start > 0 {
        // The losses before the checkpoint, so the outcome covers the whole run (times and
        // tokens/s cover only the steps run in this process).
        let earlier = crate::metrics::read_lines(&dir.join("metrics.jsonl"))?;
        let train = earlier.iter().filter(|v| v["kind"] == "train");
        out.train_losses = train.clone().filter_map(|v| v["loss"].as_f64()).collect();
        stabilities = train
            .filter_map(|v| Some((v["step"].as_u64()?, v["stability"].as_f64()?)))
            .collect();
    }
    let (mut total_tokens, mut total_time) = (0usize, 0.0);
    let mut times = Vec::new();
    for step in start..cfg.steps {
        let lr = lr_at(cfg, step);
        let t0 = Instant::now();
        optimizer.zero_grads();
        let (mut loss_sum, mut tokens, mut fwd_s, mut bwd_s) = (0.0, 0, 0.0, 0.0);
        for micro in 0..cfg.accum {
            let t = Instant::now();
            let global = step * cfg.accum as u64 + micro as u64;
            let indices = micro_batch_indices(data.train.len(), cfg.micro_batch, global, cfg.seed);
            let items: Vec<&Tokenized> = indices.iter().map(|&i| &data.train[i]).collect();
            let batch = make_batch(&items, tok.pad(), &model.device)?;
            let loss = mean_nll(model, &batch)?;
            loss_sum += loss.to_scalar::<f32>()? as f64; // waits for the forward
            let t_bwd = Instant::now();
            fwd_s += (t_bwd - t).as_secs_f64();
            let store = loss.backward()?;
            optimizer.accumulate(model, &store)?;
            model.device.synchronize()?; // the backward and the accumulation, on a GPU
            bwd_s += t_bwd.elapsed().as_secs_f64();
            tokens += batch.n_tokens;
        }
        let t_opt = Instant::now();
        let report = optimizer.step(model, lr)?;
        let opt_s = t_opt.elapsed().as_secs_f64();
        let step_s = t0.elapsed().as_secs_f64();
        let loss = loss_sum / cfg.accum as f64;
        out.train_losses.push(loss);
        times.push([step_s, fwd_s, bwd_s, opt_s]);
        total_tokens += tokens;
        total_time += step_s;
        let kept = kept_by_layer(model, &report, spec, |i, s| optimizer.count_kept(i, s))?;
        let sum = |f: fn(&gradmask::GroupStats) -> u64| report.groups.iter().map(f).sum::<u64>();
        let stability = stability_by_layer(model, optimizer.stability(), &report);
        if let Some((whole, _)) = stability {
            stabilities.push((step + 1, whole));
        }
        let (stability, layer_stability) = stability.unzip();
        metrics.write(json!({
            "kind": "train", "method": method, "seed": cfg.seed, "mask_ratio": spec.mask.mask_ratio, "step": step + 1, "loss": loss, "lr": lr,
            "grad_norm": report.grad_norm, "skipped": report.skipped, "tokens": tokens,
            "step_s": step_s, "fwd_s": fwd_s, "bwd_s": bwd_s, "opt_s": opt_s, "kept_by_layer": kept,
            "stability": stability, "stability_by_layer": layer_stability,
            "kept": sum(|g| g.kept), "target": sum(|g| g.target), "len": sum(|g| g.len),
        }))?;
        let tps = total_tokens as f64 / total_time;
        let message = format!("loss {loss:.4} | {tps:.0} tok/s | lr {lr:.2e}");
        let done = step + 1;
        if bar.is_hidden()
            && cfg.progress
            && (done % (cfg.steps / 10).max(1) == 0 || done == cfg.steps)
        {
            println!("  [{label}] step {done}/{}: {message}", cfg.steps); // no terminal: plain lines
        }
        bar.set_message(message);
        bar.inc(1);
        if cfg.eval_every > 0 && done % cfg.eval_every == 0 && done < cfg.steps {
            let (eval_loss, em) = heldout_scores(model, tok, data, cfg)?;
            let line = format!(
                "  [{label}] step {done}: held-out loss {eval_loss:.4}, exact match {:.1}%",
                em * 100.0
            );
            if bar.is_hidden() {
                println!("{line}");
            } else {
                bar.println(line);
            }
            metrics.write(json!({"kind": "eval", "method": method, "seed": cfg.seed, "mask_ratio": spec.mask.mask_ratio, "step": done, "heldout_loss": eval_loss, "exact_match": em}))?;
        }
        if cfg.save_every > 0 && (done % cfg.save_every == 0 || done == cfg.steps) {
            checkpoint::save(dir, model, tok, &mut optimizer, done, cfg.steps)?;
        }
        if cfg.stop_after == Some(done) {
            out.stopped = true;
            break;
        }
    }
    bar.finish_and_clear();
    out.steps_run = out.train_losses.len() as u64 - start.min(out.train_losses.len() as u64);
    out.step_s = median(times.iter().map(|t| t[0]));
    out.fwd_s = median(times.iter().map(|t| t[1]));
    out.bwd_s = median(times.iter().map(|t| t[2]));
    out.opt_s = median(times.iter().map(|t| t[3]));
    out.tokens_per_s = if total_time > 0.0 {
        total_tokens as f64 / total_time
    } else {
        0.0
    };
    out.params = optimizer.params()?;
    let late: Vec<f64> = stabilities
        .iter()
        .filter(|(s, _)| *s > cfg.steps / 2)
        .map(|(_, x)| *x)
        .collect();
    out.mask_stability = (!late.is_empty()).then(|| late.iter().sum::<f64>() / late.len() as f64);
    Ok(out)
}

/// Median of `values` (0 when empty): robust to the load spikes of a shared machine.
fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Held-out loss (in batches of twice the micro-batch) and exact match (greedy, in batches of 64)
/// of the model as it is.
pub fn heldout_scores(
    model: &Llama,
    tok: &Tok,
    data: &DataSet,
    cfg: &TrainConfig,
) -> Result<(f64, f64)> {
    let loss = heldout_loss(model, &data.heldout, cfg.micro_batch * 2, tok.pad())?;
    let em = exact_match(
        model,
        tok,
        eval_subset(data, cfg),
        cfg.max_new_tokens,
        64,
        0,
    )?;
    Ok((loss, em))
}

/// The held-out examples exact match is measured on.
pub fn eval_subset<'a>(data: &'a DataSet, cfg: &TrainConfig) -> &'a [Example] {
    &data.heldout_examples[..cfg.eval_samples.min(data.heldout_examples.len())]
}

fn progress_bar(cfg: &TrainConfig, method: &str, start: u64) -> ProgressBar {
    if !cfg.progress || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(cfg.steps).with_position(start);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>7} [{elapsed_precise}] {bar:30} {pos}/{len} ETA {eta} | {msg}",
        )
        .expect("valid template"),
    );
    bar.set_prefix(method.to_string());
    bar
}
