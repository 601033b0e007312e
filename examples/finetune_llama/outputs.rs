//! What a finished invocation writes and prints: the merged `metrics.jsonl`, the plots,
//! `summary.json` and the table (per method for a single comparison, over seeds otherwise).
//!
//! Plots, from the first seed's runs: `loss.png`; `mask_stability.png` (GMT and random mask, where
//! tracked); `kept_fraction.png` only for GMT under layer or global scope, where the kept fraction
//! of a layer varies (under per-tensor scope it is 1 - r by construction, and a random mask's is
//! 1 - r up to sampling noise). The per-layer plots show, per method, the run at the ratio nearest
//! `--mask-ratio`. For a sweep, `mask_sweep.png`: the scores against the ratio over seeds.

use std::path::Path;

use anyhow::Result;

use crate::aggregate::{aggregate, table};
use crate::cli::{Args, Method, ScopeArg};
use crate::plan::{Plan, RunSpec};
use crate::report::{self, write_json};
use crate::runs::Executed;
use crate::{metrics, plot, sweep_plot};

pub fn write(
    out: &Path,
    args: &Args,
    plan: &Plan,
    executed: &Executed,
    summary: &serde_json::Value,
) -> Result<()> {
    let dirs: Vec<String> = plan
        .runs
        .iter()
        .map(|r| r.dir.display().to_string())
        .collect();
    report::merge_metrics(out, &dirs)?;
    let mut written = vec!["metrics.jsonl", "summary.json", "loss.png"];
    let first_seed = plan.runs.iter().filter(|r| r.seed == plan.seeds[0]);
    let runs = first_seed
        .map(|r| {
            let name = r.dir.file_name().expect("a run folder").to_string_lossy();
            let lines = metrics::read_lines(&out.join(&r.dir).join("metrics.jsonl"))?;
            Ok((r, name.to_string(), lines))
        })
        .collect::<Result<Vec<_>>>()?;
    // Per-layer plots: per method, the run at the ratio nearest --mask-ratio.
    let distance = |r: &RunSpec| (r.mask_ratio - args.mask_ratio).abs();
    let nearest = |r: &RunSpec| {
        let same = runs.iter().filter(|(o, _, _)| o.method == r.method);
        same.map(|(o, _, _)| distance(o))
            .fold(f64::INFINITY, f64::min)
            == distance(r)
    };
    let named = |keep: &dyn Fn(&RunSpec) -> bool| -> Vec<(String, Vec<serde_json::Value>)> {
        runs.iter()
            .filter(|(r, _, _)| keep(r))
            .map(|(_, name, lines)| (name.clone(), lines.clone()))
            .collect()
    };
    plot::loss_plot(&out.join("loss.png"), &named(&|_| true))?;
    let gmt = named(&|r| r.method == Method::Gmt && nearest(r));
    if args.scope != ScopeArg::PerTensor && !gmt.is_empty() {
        plot::kept_plot(&out.join("kept_fraction.png"), &gmt)?;
        written.push("kept_fraction.png");
    }
    let tracked = named(&|r| matches!(r.method, Method::Gmt | Method::Random) && nearest(r));
    let has_stability = |lines: &[serde_json::Value]| lines.iter().any(|v| v["stability"].is_f64());
    if tracked.iter().any(|(_, lines)| has_stability(lines)) {
        plot::stability_plot(&out.join("mask_stability.png"), &tracked)?;
        written.push("mask_stability.png");
    }
    let aggregates = aggregate(&executed.results);
    if plan.sweep {
        sweep_plot::sweep_plot(&out.join("mask_sweep.png"), &aggregates)?;
        written.push("mask_sweep.png");
    }
    write_json(&out.join("summary.json"), summary)?;
    if plan.single {
        println!("\n{}", report::table(&executed.results));
        if let Some(b) = &executed.before {
            println!(
                "before fine-tuning: held-out exact match {:.1}%, loss {:.4}",
                b.exact_match * 100.0,
                b.heldout_loss
            );
        }
    } else {
        println!(
            "\nover seeds {:?}: mean ± std [min, max]; Δ vs SFT: mean of the per-seed differences ± its standard error",
            plan.seeds
        );
        println!("{}", table(&aggregates, executed.before.as_ref()));
    }
    println!("wrote {}/{{{}}}", out.display(), written.join(", "));
    Ok(())
}
