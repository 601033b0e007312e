//! The runs of one invocation: every method of `--compare`, once per seed (`--seeds`) and, for the
//! methods that mask, once per ratio of `--sweep-mask-ratio`. Built and checked before anything is
//! loaded, so bad flags fail before any training.
//!
//! Order: seed by seed (a finished seed is a complete paired comparison), then methods in the
//! order given, then ratios. SFT and HFT do not depend on the ratio and run once per seed; one-off
//! reuses its seed's SFT run at every ratio.
//!
//! Folders: without `--seeds` and `--sweep-mask-ratio`, `<method>/` as before; otherwise
//! `seed-<s>/<method>/`, and `seed-<s>/<method>-r<ratio>/` for the masking methods of a sweep.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::cli::{Args, Method};

/// One training run (or one-off evaluation) of the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    pub method: Method,
    /// The ratio a masking method runs with (GMT, random, one-off); `--mask-ratio` for the others,
    /// which ignore it.
    pub mask_ratio: f64,
    pub seed: u64,
    /// The run's folder, relative to the output folder.
    pub dir: PathBuf,
}

impl RunSpec {
    /// The options of this run: `args` with its seed and mask ratio.
    pub fn args(&self, args: &Args) -> Args {
        Args {
            seed: self.seed,
            mask_ratio: self.mask_ratio,
            ..args.clone()
        }
    }

    /// `gmt r0.2 seed 43`, for progress lines.
    pub fn label(&self) -> String {
        let ratio = if masks(self.method) {
            format!(" r{}", self.mask_ratio)
        } else {
            String::new()
        };
        format!("{}{ratio} seed {}", self.method.name(), self.seed)
    }
}

/// Whether the method's result depends on the mask ratio.
pub fn masks(method: Method) -> bool {
    matches!(method, Method::Gmt | Method::Random | Method::Oneoff)
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub seeds: Vec<u64>,
    pub sweep: bool,
    /// No `--seeds` and no sweep: the single comparison of earlier versions, with its per-method
    /// table and folders.
    pub single: bool,
    pub runs: Vec<RunSpec>,
}

impl Plan {
    /// The plan of `args`. Rejects `--seeds 0`, repeated seeds, sweep ratios outside [0, 1] (or
    /// NaN) and repeated sweep ratios, each with the flag's name.
    pub fn new(args: &Args) -> Result<Plan> {
        let seeds = seeds(args)?;
        let sweep = args.sweep_mask_ratio.is_some();
        let ratios = match &args.sweep_mask_ratio {
            Some(list) => sweep_ratios(list)?,
            None => vec![args.mask_ratio],
        };
        let single = args.seeds.is_none() && !sweep;
        let mut runs = Vec::new();
        for &seed in &seeds {
            for method in args.methods() {
                let per_ratio: &[f64] = if masks(method) {
                    &ratios
                } else {
                    &[args.mask_ratio]
                };
                for &mask_ratio in per_ratio {
                    let name = if sweep && masks(method) {
                        format!("{}-r{mask_ratio}", method.name())
                    } else {
                        method.name().to_string()
                    };
                    let dir = if single {
                        PathBuf::from(name)
                    } else {
                        PathBuf::from(format!("seed-{seed}")).join(name)
                    };
                    runs.push(RunSpec {
                        method,
                        mask_ratio,
                        seed,
                        dir,
                    });
                }
            }
        }
        Ok(Plan {
            seeds,
            sweep,
            single,
            runs,
        })
    }
}

/// The seeds of `args`: `--seed` alone, N seeds from `--seed` (`--seeds N`), or the list given.
fn seeds(args: &Args) -> Result<Vec<u64>> {
    match args.seeds.as_deref() {
        None => Ok(vec![args.seed]),
        Some([]) | Some([0]) => {
            bail!("--seeds 0: give a number of seeds >= 1, or a list of seeds such as 1,2,3")
        }
        Some(&[count]) => Ok((0..count).map(|i| args.seed.wrapping_add(i)).collect()),
        Some(list) => {
            for (i, seed) in list.iter().enumerate() {
                if list[..i].contains(seed) {
                    bail!("--seeds: seed {seed} appears twice in {list:?}; each seed runs once");
                }
            }
            Ok(list.to_vec())
        }
    }
}

fn sweep_ratios(list: &[f64]) -> Result<Vec<f64>> {
    if list.is_empty() {
        bail!("--sweep-mask-ratio: give at least one ratio");
    }
    for (i, &ratio) in list.iter().enumerate() {
        if !(0.0..=1.0).contains(&ratio) {
            bail!("--sweep-mask-ratio: {ratio} is not a mask ratio (expected a number in [0, 1])");
        }
        if list[..i].contains(&ratio) {
            bail!("--sweep-mask-ratio: ratio {ratio} appears twice");
        }
    }
    Ok(list.to_vec())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn plan(flags: &str) -> Result<Plan> {
        let argv = format!("finetune_llama {flags}");
        Plan::new(&Args::try_parse_from(argv.split_whitespace())?)
    }

    fn dirs(plan: &Plan) -> Vec<String> {
        plan.runs
            .iter()
            .map(|r| r.dir.display().to_string())
            .collect()
    }

    #[test]
    fn the_default_is_one_comparison_in_the_old_folders() {
        let p = plan("").unwrap();
        assert!(p.single);
        assert_eq!(dirs(&p), ["sft", "gmt", "random"]);
        assert!(p.runs.iter().all(|r| r.seed == 42 && r.mask_ratio == 0.5));
    }

    #[test]
    fn seeds_repeat_every_method_seed_by_seed() {
        let p = plan("--seeds 3 --seed 7 --compare sft,gmt").unwrap();
        assert!(!p.single);
        assert_eq!(p.seeds, [7, 8, 9]);
        assert_eq!(
            dirs(&p),
            [
                "seed-7/sft",
                "seed-7/gmt",
                "seed-8/sft",
                "seed-8/gmt",
                "seed-9/sft",
                "seed-9/gmt"
            ]
        );
        let p = plan("--seeds 5,1").unwrap();
        assert_eq!(p.seeds, [5, 1]);
        assert_eq!(p.runs.len(), 6);
        // One seed given as --seeds 1 is still a seeds run (its folders say which seed).
        assert_eq!(dirs(&plan("--seeds 1").unwrap())[0], "seed-42/sft");
    }

    #[test]
    fn a_sweep_runs_masking_methods_per_ratio_and_the_others_once() {
        let p = plan("--sweep-mask-ratio 0.1,0.9 --compare sft,gmt,hft,oneoff --seeds 2").unwrap();
        assert_eq!(
            dirs(&p),
            [
                "seed-42/sft",
                "seed-42/gmt-r0.1",
                "seed-42/gmt-r0.9",
                "seed-42/hft",
                "seed-42/oneoff-r0.1",
                "seed-42/oneoff-r0.9",
                "seed-43/sft",
                "seed-43/gmt-r0.1",
                "seed-43/gmt-r0.9",
                "seed-43/hft",
                "seed-43/oneoff-r0.1",
                "seed-43/oneoff-r0.9",
            ]
        );
        assert_eq!(p.runs[2].mask_ratio, 0.9);
        assert_eq!(p.runs[2].label(), "gmt r0.9 seed 42");
        assert_eq!(p.runs[6].label(), "sft seed 43");
        let args = p.runs[2].args(&Args::parse_from(["x"]));
        assert_eq!((args.seed, args.mask_ratio), (42, 0.9));
    }

    #[test]
    fn bad_flags_are_named() {
        let err = |flags: &str| format!("{:#}", plan(flags).unwrap_err());
        assert!(err("--seeds 0").contains("--seeds 0"));
        assert!(err("--seeds 3,4,3").contains("--seeds: seed 3 appears twice"));
        assert!(err("--sweep-mask-ratio 0.2,1.5").contains("--sweep-mask-ratio: 1.5"));
        assert!(err("--sweep-mask-ratio -0.1").contains("--sweep-mask-ratio"));
        assert!(err("--sweep-mask-ratio NaN").contains("--sweep-mask-ratio: NaN"));
        assert!(err("--sweep-mask-ratio 0.2,0.2").contains("appears twice"));
        let conflict = err("--sweep-mask-ratio 0.2 --method gmt");
        assert!(
            conflict.contains("--sweep-mask-ratio") && conflict.contains("--method"),
            "{conflict}"
        );
    }
}
