//! `--shards N`: the optimizer's state over N thread-ranks (the candle adapter's
//! `Config::with_shards`) gives the unsharded run's training lines (loss, gradient norm, kept
//! counts, mask stability) and final weights bit for bit; a sharded run killed and resumed from
//! its per-rank checkpoints reproduces them; a resume with another N is refused.

use std::path::Path;

use super::{micro_args, scratch, threads, train_lines, train_losses};
use crate::run;

/// What a step's line must repeat exactly (times are the process's own).
const SAME: [&str; 8] = [
    "loss",
    "grad_norm",
    "skipped",
    "kept",
    "target",
    "kept_by_layer",
    "stability",
    "stability_by_layer",
];

fn assert_same_lines(want: &Path, got: &Path, method: &str, what: &str, keys: &[&str]) {
    let (want, got) = (train_lines(want, method), train_lines(got, method));
    assert_eq!(want.len(), 30, "{method}");
    assert_eq!(got.len(), want.len(), "{method}, {what}");
    for (w, g) in want.iter().zip(&got) {
        for key in keys {
            assert_eq!(
                g[key], w[key],
                "{method}, {what}: {key} at step {}",
                w["step"]
            );
        }
    }
}

fn final_weights(out: &Path, method: &str) -> Vec<u8> {
    let path = out
        .join(method)
        .join("checkpoints/step-000030/model.safetensors");
    std::fs::read(path).unwrap()
}

#[test]
fn sharded_runs_give_the_unsharded_losses_and_weights() {
    let methods = ["sft", "gmt", "random", "hft"];
    let compare = ["--compare", "sft,gmt,random,hft", "--scope", "layer"];
    let one = scratch("shards-none");
    run(&micro_args(&one, &compare), threads()).unwrap();
    for n in ["1", "2", "3"] {
        let out = scratch(&format!("shards-{n}"));
        let mut args = compare.to_vec();
        args.extend(["--shards", n]);
        run(&micro_args(&out, &args), threads()).unwrap();
        for method in methods {
            assert_same_lines(&one, &out, method, &format!("{n} ranks"), &SAME);
            let weights = final_weights(&out, method);
            assert!(
                weights == final_weights(&one, method),
                "{method}, {n} ranks: weights"
            );
            let ckpt = out.join(method).join("checkpoints/step-000030");
            let files = |name: &str| ckpt.join(name).exists();
            if n == "1" {
                assert!(files("optimizer.bin") && !files("optimizer.bin.rank0"));
            } else {
                let last = format!("optimizer.bin.rank{}", n.parse::<usize>().unwrap() - 1);
                assert!(
                    files(&last) && !files("optimizer.bin"),
                    "{method}, {n} ranks"
                );
            }
        }
        std::fs::remove_dir_all(out).unwrap();
    }
    std::fs::remove_dir_all(one).unwrap();
}

#[test]
fn a_sharded_run_resumes_exactly_and_only_with_its_shards() {
    let one = scratch("shards-resume-none");
    run(&micro_args(&one, &[]), threads()).unwrap();
    // Five ranks, killed after step 15, resumed from the per-rank step-10 checkpoints.
    let split = scratch("shards-resume-5");
    let five = ["--shards", "5"];
    let stop = [&five[..], &["--stop-after", "15"]].concat();
    assert!(run(&micro_args(&split, &stop), threads())
        .unwrap()
        .is_empty());
    assert_eq!(train_losses(&split, "gmt").len(), 15);
    for other in ["1", "2"] {
        let err = run(
            &micro_args(&split, &["--shards", other, "--resume"]),
            threads(),
        );
        let err = format!("{:#}", err.unwrap_err());
        assert!(
            err.contains("--shards 5") && err.contains(&format!("--shards {other}")),
            "{err}"
        );
    }
    run(
        &micro_args(&split, &[&five[..], &["--resume"]].concat()),
        threads(),
    )
    .unwrap();
    // Not the mask stability: a checkpoint holds no mask, so step 11 has no previous one.
    assert_same_lines(&one, &split, "gmt", "5 ranks, resumed", &SAME[..6]);
    assert!(final_weights(&split, "gmt") == final_weights(&one, "gmt"));
    for dir in [one, split] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}
