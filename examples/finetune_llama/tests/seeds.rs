//! Seeds and the mask-ratio sweep, end to end on the micro model.

use super::{micro_args, scratch, threads, train_losses};
use std::path::Path;

use candle_core::Device;

use crate::data::{make_batch, micro_batch_indices, Tokenized};
use crate::eval::mean_nll;
use crate::model::Llama;
use crate::report::MethodResult;
use crate::run;

/// `--seeds` runs every method per seed in `seed-<s>/`. The run of the base seed (`--seed`) equals
/// a plain run; another seed's run does not depend on what ran before it in the invocation; the
/// built-in model starts from the seed's initialisation; one-off reuses its own seed's SFT.
#[test]
fn seeded_runs_repeat_plain_runs_and_do_not_leak_into_each_other() {
    let sweep = scratch("sweep");
    let flags = ["--compare", "sft,gmt,random,oneoff", "--steps", "8"];
    let sweep_args = |out: &Path, extra: &[&str]| {
        let mut args = micro_args(out, &[&flags[..], extra].concat());
        args.method = None; // micro_args' --method gmt cannot go with a sweep
        args.sweep_mask_ratio = Some(vec![0.3, 0.6]);
        args
    };
    let results = run(&sweep_args(&sweep, &["--seeds", "42,7"]), threads()).unwrap();
    // Per seed: sft, gmt x2, random x2, oneoff x2.
    assert_eq!(results.len(), 14);
    let seeds: Vec<u64> = results.iter().map(|r| r.seed).collect();
    assert_eq!(seeds, [[42; 7], [7; 7]].concat());

    // The base seed (42) as a plain run: random mask at 0.6.
    let single = scratch("single");
    let plain = ["--method", "random", "--mask-ratio", "0.6", "--steps", "8"];
    let plain = run(&micro_args(&single, &plain), threads()).unwrap();
    let seeded = train_losses(&sweep.join("seed-42"), "random-r0.6");
    assert_eq!(seeded, train_losses(&single, "random"));
    let from_sweep = results
        .iter()
        .find(|r| r.seed == 42 && r.method == "random" && r.mask_ratio == 0.6);
    assert_eq!(from_sweep.unwrap().heldout_loss, plain[0].heldout_loss);

    // Seed 7 first, alone: the same runs as after seed 42.
    let alone = scratch("alone");
    run(
        &sweep_args(&alone, &["--seeds", "7,8", "--stop-after", "8"]),
        threads(),
    )
    .unwrap();
    assert_eq!(
        train_losses(&alone.join("seed-7"), "sft"),
        train_losses(&sweep.join("seed-7"), "sft")
    );

    // Seed 7's first loss is that of the built-in model initialised with seed 7, on seed 7's
    // first batch of the base seed's data.
    let args = micro_args(&alone, &[]);
    let examples = crate::setup::load_examples(&args).unwrap();
    let (model, tok) = crate::setup::load_model(&args, &Device::Cpu, &examples).unwrap();
    let data = crate::setup::load_data(&args, &tok, examples).unwrap();
    let init = Llama::init(model.cfg.clone(), 7, &Device::Cpu).unwrap();
    let indices = micro_batch_indices(data.train.len(), args.micro_batch, 0, 7);
    let items: Vec<&Tokenized> = indices.iter().map(|&i| &data.train[i]).collect();
    let batch = make_batch(&items, tok.pad(), &Device::Cpu).unwrap();
    let first = mean_nll(&init, &batch).unwrap().to_scalar::<f32>().unwrap() as f64;
    assert_eq!(train_losses(&sweep.join("seed-7"), "sft")[0], first);

    // Different seeds train differently (init, batches).
    assert_ne!(
        train_losses(&sweep.join("seed-42"), "sft"),
        train_losses(&sweep.join("seed-7"), "sft")
    );
    // One-off at both ratios reuses its seed's SFT.
    for seed in [42, 7] {
        let of = |m: &str| -> Vec<&MethodResult> {
            let mine = |r: &&MethodResult| r.seed == seed && r.method == m;
            results.iter().filter(mine).collect()
        };
        let (sft, oneoff) = (of("sft"), of("oneoff"));
        assert_eq!((sft.len(), oneoff.len()), (1, 2));
        assert!(oneoff
            .iter()
            .all(|r| r.final_train_loss == sft[0].final_train_loss));
    }

    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sweep.join("summary.json")).unwrap())
            .unwrap();
    let aggregate = summary["aggregate"].as_array().unwrap();
    assert_eq!(
        aggregate.len(),
        7,
        "sft, then gmt/random/oneoff at 2 ratios"
    );
    let gmt = &aggregate[1];
    assert_eq!(
        (gmt["method"].as_str(), gmt["mask_ratio"].as_f64()),
        (Some("gmt"), Some(0.3))
    );
    assert_eq!(gmt["exact_match"]["n"], 2);
    assert_eq!(gmt["vs_sft"]["heldout_loss"]["n"], 2);
    assert!(sweep.join("mask_sweep.png").exists());
    let merged = crate::metrics::read_lines(&sweep.join("metrics.jsonl")).unwrap();
    let tagged = |seed: u64, ratio: f64| {
        merged
            .iter()
            .filter(|v| v["seed"] == seed && v["mask_ratio"] == ratio && v["method"] == "gmt")
            .count()
    };
    assert_eq!(tagged(7, 0.6), 8 + 1, "8 train lines and the final eval");

    // Resumed with every result present: nothing retrains, the results are read back.
    let again = run(
        &sweep_args(&sweep, &["--seeds", "42,7", "--resume"]),
        threads(),
    )
    .unwrap();
    assert_eq!(again.len(), 14);
    assert_eq!(again[3].heldout_loss, results[3].heldout_loss);
    for dir in [sweep, single, alone] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// Bad seed and sweep flags fail before anything is loaded or written.
#[test]
fn bad_seed_and_sweep_flags_fail_before_training() {
    let out = scratch("bad-flags");
    let out_dir = out.join("run");
    for (flags, sweep, needle) in [
        (&["--seeds", "0"][..], None, "--seeds 0"),
        (&["--seeds", "1,2,1"], None, "--seeds: seed 1"),
        (&[], Some(vec![0.2, 1.2]), "--sweep-mask-ratio: 1.2"),
    ] {
        let mut args = micro_args(&out_dir, flags);
        if sweep.is_some() {
            (args.method, args.sweep_mask_ratio) = (None, sweep);
        }
        let err = run(&args, threads()).unwrap_err();
        assert!(format!("{err:#}").contains(needle), "{flags:?}: {err:#}");
        assert!(!out_dir.exists(), "{flags:?} wrote {}", out_dir.display());
    }
    std::fs::remove_dir_all(out).unwrap();
}

/// The kept-fraction plot only where it can vary (GMT under layer or global scope); the
/// stability plot wherever GMT or random mask ran, unless turned off.
#[test]
fn diagnostic_plots_are_drawn_where_they_say_something() {
    let out = scratch("plots");
    let run_in = |name: &str, flags: &[&str]| {
        let dir = out.join(name);
        run(
            &micro_args(&dir, &[&["--steps", "4"], flags].concat()),
            threads(),
        )
        .unwrap();
        let has = |file: &str| dir.join(file).exists();
        (has("kept_fraction.png"), has("mask_stability.png"))
    };
    assert_eq!(run_in("per-tensor", &[]), (false, true));
    assert_eq!(run_in("layer", &["--scope", "layer"]), (true, true));
    assert_eq!(run_in("global", &["--scope", "global"]), (true, true));
    assert_eq!(run_in("off", &["--no-mask-stability"]), (false, false));
    let lines = crate::metrics::read_lines(&out.join("layer/gmt/metrics.jsonl")).unwrap();
    let stability: Vec<&serde_json::Value> = lines.iter().map(|v| &v["stability"]).collect();
    assert!(stability[0].is_null(), "no step before the first");
    assert!(stability[1..4]
        .iter()
        .all(|s| s.as_f64().is_some_and(|x| x > 0.0 && x <= 1.0)));
    std::fs::remove_dir_all(out).unwrap();
}
