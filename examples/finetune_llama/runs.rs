//! Runs a [`Plan`]: every run of it, in order, on one loaded model, tokenizer and data set.
//!
//! What runs share: the tokenizer, the data and its split, the loaded (dequantized) model, and per
//! seed the SFT run that one-off reuses at every ratio. Each run starts from its seed's initial
//! weights: the loaded model's, or for the built-in model a fresh initialisation with the seed. A
//! pretrained model is evaluated once before any fine-tuning (`before.json`), as a reference.
//!
//! With `--resume`, a run whose folder holds `result.json` is kept, and the first unfinished one
//! continues from its latest checkpoint.

use std::borrow::Cow;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;

use crate::aggregate::Before;
use crate::model::Llama;
use crate::plan::Plan;
use crate::report::{write_json, MethodResult};
use crate::setup::train_config;
use crate::tokenizer::Tok;
use crate::train::{heldout_scores, host_params, DataSet, Outcome};
use crate::{cli::Args, run_method};

/// What `execute` produced: the finished runs, and whether `--stop-after` ended it early.
pub struct Executed {
    pub results: Vec<MethodResult>,
    pub stopped: bool,
    pub before: Option<Before>,
}

/// Runs every run of `plan` whose result is not already in `out`.
pub fn execute(
    plan: &Plan,
    args: &Args,
    model: &Llama,
    tok: &Tok,
    data: &DataSet,
    out: &Path,
) -> Result<Executed> {
    let loaded = host_params(model)?;
    let before = if args.model == "builtin" {
        None
    } else {
        Some(evaluate_before(args, model, tok, data, out)?)
    };
    let (mut results, mut sft_run): (Vec<MethodResult>, Option<Outcome>) = (Vec::new(), None);
    let mut seed_weights: Option<(u64, Cow<[Vec<f32>]>)> = None;
    for (index, run) in plan.runs.iter().enumerate() {
        let dir = out.join(&run.dir);
        std::fs::create_dir_all(&dir)?;
        let label = format!("run {}/{} {}", index + 1, plan.runs.len(), run.label());
        if args.resume && dir.join("result.json").exists() {
            let mut result: MethodResult =
                serde_json::from_str(&std::fs::read_to_string(dir.join("result.json"))?)?;
            result.seed = run.seed; // results written before seeds existed have none
            println!("[{label}] already finished; kept its result");
            results.push(result);
            continue;
        }
        if seed_weights.as_ref().is_none_or(|(s, _)| *s != run.seed) {
            sft_run = None; // one-off reuses only its own seed's SFT
            seed_weights = Some((run.seed, initial_weights(args, model, run.seed, &loaded)?));
        }
        let initial = &seed_weights.as_ref().expect("set above").1;
        let run_args = run.args(args);
        match run_method(
            run.method,
            &run_args,
            model,
            tok,
            data,
            initial,
            &dir,
            &mut sft_run,
            &label,
        )? {
            Some(result) => results.push(result),
            None => {
                println!(
                    "[{label}] stopped after {} steps (--stop-after); continue with --resume",
                    args.stop_after.unwrap_or(0)
                );
                return Ok(Executed {
                    results,
                    stopped: true,
                    before,
                });
            }
        }
    }
    Ok(Executed {
        results,
        stopped: false,
        before,
    })
}

/// The weights a run of `seed` starts from: the loaded model's, or for the built-in model (whose
/// initialisation the seed drives) a fresh initialisation unless `seed` is the one loaded.
fn initial_weights<'a>(
    args: &Args,
    model: &Llama,
    seed: u64,
    loaded: &'a [Vec<f32>],
) -> Result<Cow<'a, [Vec<f32>]>> {
    if args.model != "builtin" || seed == args.seed {
        return Ok(Cow::Borrowed(loaded));
    }
    let fresh = Llama::init(model.cfg.clone(), seed, &model.device)?;
    Ok(Cow::Owned(host_params(&fresh)?))
}

/// The loaded model's held-out scores before any fine-tuning; read back from `before.json` when a
/// resumed run has it.
fn evaluate_before(
    args: &Args,
    model: &Llama,
    tok: &Tok,
    data: &DataSet,
    out: &Path,
) -> Result<Before> {
    let path = out.join("before.json");
    if args.resume && path.exists() {
        return Ok(serde_json::from_str(&std::fs::read_to_string(&path)?)?);
    }
    let started = Instant::now();
    let (heldout_loss, exact_match) = heldout_scores(model, tok, data, &train_config(args))?;
    println!(
        "[before fine-tuning] held-out loss {heldout_loss:.4}, exact match {:.1}% ({:.1} s)",
        exact_match * 100.0,
        started.elapsed().as_secs_f64()
    );
    let before = Before {
        exact_match,
        heldout_loss,
    };
    write_json(&path, &before)?;
    Ok(before)
}
