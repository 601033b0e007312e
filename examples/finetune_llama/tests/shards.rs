//! `--shards N`: the optimizer's state over N thread-ranks gives the unsharded run's losses, and a
//! sharded run killed and resumed from its per-rank checkpoints reproduces them too.

use super::{micro_args, scratch, threads, train_losses};
use crate::run;

#[test]
fn sharded_runs_give_the_unsharded_losses_and_resume_exactly() {
    let methods = ["sft", "gmt", "random"];
    let compare = ["--compare", "sft,gmt,random", "--scope", "layer"];
    let one = scratch("shards-1");
    run(&micro_args(&one, &compare), threads()).unwrap();
    let three = scratch("shards-3");
    let mut args: Vec<&str> = compare.to_vec();
    args.extend(["--shards", "3"]);
    run(&micro_args(&three, &args), threads()).unwrap();
    for method in methods {
        let want = train_losses(&one, method);
        assert_eq!(want.len(), 30, "{method}");
        assert_eq!(train_losses(&three, method), want, "{method}: 3 ranks");
        assert!(three
            .join(method)
            .join("checkpoints/step-000030/optimizer.bin.rank2")
            .exists());
    }

    // Five ranks (more than some small tensors have entries per rank), killed after step 15 and
    // resumed from the per-rank step-10 checkpoints.
    let split = scratch("shards-5");
    let gmt = ["--scope", "layer", "--shards", "5"];
    let mut stop = gmt.to_vec();
    stop.extend(["--stop-after", "15"]);
    assert!(run(&micro_args(&split, &stop), threads())
        .unwrap()
        .is_empty());
    let mut resume = gmt.to_vec();
    resume.push("--resume");
    run(&micro_args(&split, &resume), threads()).unwrap();
    assert_eq!(train_losses(&split, "gmt"), train_losses(&one, "gmt"));

    for dir in [one, three, split] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}
