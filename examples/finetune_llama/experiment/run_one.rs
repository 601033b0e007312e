//! One run: trains and evaluates one method from the seed's initial weights (one-off reuses the
//! SFT run of this process when there is one), and writes its `result.json`.

use std::path::Path;
use std::time::Instant;

use anyhow::Result;

use super::plan;
use super::setup::train_config;
use crate::cli::{Args, Method};
use crate::model::set_params;
use crate::model::tokenizer::Tok;
use crate::model::Llama;
use crate::report::{write_json, MethodResult};
use crate::train::{self, methods, metrics, DataSet, TrainConfig};

/// Trains and evaluates one method (one-off reuses the SFT run of this process when there is one);
/// `label` names the run in progress lines.
#[allow(clippy::too_many_arguments)]
pub fn run_method(
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
