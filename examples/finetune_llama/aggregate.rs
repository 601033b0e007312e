//! Results over seeds: per method and mask ratio, the spread of held-out exact match and loss, and
//! the paired difference against SFT (same seed, so same batch order and data), for the table and
//! `summary.json`.

use serde::{Deserialize, Serialize};

use crate::report::MethodResult;
use crate::stats::{paired, plus_minus, spread, Paired, Spread};

/// One method at one mask ratio, over its seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Aggregate {
    pub method: String,
    pub mask_ratio: f64,
    pub seeds: Vec<u64>,
    pub exact_match: Spread,
    pub heldout_loss: Spread,
    /// This method minus SFT, seed by seed (absent for SFT itself, or without SFT runs).
    pub vs_sft: Option<VsSft>,
    /// Means over seeds of each run's median step time and optimizer time.
    pub step_s: f64,
    pub opt_s: f64,
    /// Mean mask stability of each run (see `MethodResult::mask_stability`), where measured.
    pub mask_stability: Option<Spread>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VsSft {
    pub exact_match: Paired,
    pub heldout_loss: Paired,
}

/// The held-out scores of the loaded model before any fine-tuning (a pretrained model's reference).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Before {
    pub exact_match: f64,
    pub heldout_loss: f64,
}

/// Groups `results` by (method, mask ratio), in order of first appearance.
pub fn aggregate(results: &[MethodResult]) -> Vec<Aggregate> {
    let mut keys: Vec<(&str, f64)> = Vec::new();
    for r in results {
        if !keys.contains(&(r.method.as_str(), r.mask_ratio)) {
            keys.push((r.method.as_str(), r.mask_ratio));
        }
    }
    let of = |method: &str, ratio: Option<f64>| -> Vec<&MethodResult> {
        let matches =
            |r: &&MethodResult| r.method == method && ratio.is_none_or(|x| r.mask_ratio == x);
        results.iter().filter(matches).collect()
    };
    let by_seed = |runs: &[&MethodResult], f: fn(&MethodResult) -> f64| -> Vec<(u64, f64)> {
        runs.iter().map(|r| (r.seed, f(r))).collect()
    };
    let sft = of("sft", None);
    keys.into_iter()
        .map(|(method, mask_ratio)| {
            let runs = of(method, Some(mask_ratio));
            let values =
                |f: fn(&MethodResult) -> f64| runs.iter().map(|r| f(r)).collect::<Vec<_>>();
            let mean =
                |f: fn(&MethodResult) -> f64| values(f).iter().sum::<f64>() / runs.len() as f64;
            let em = |r: &MethodResult| r.heldout_exact_match;
            let loss = |r: &MethodResult| r.heldout_loss;
            let stability: Vec<f64> = runs.iter().filter_map(|r| r.mask_stability).collect();
            Aggregate {
                method: method.to_string(),
                mask_ratio,
                seeds: runs.iter().map(|r| r.seed).collect(),
                exact_match: spread(&values(em)),
                heldout_loss: spread(&values(loss)),
                vs_sft: (method != "sft" && !sft.is_empty()).then(|| VsSft {
                    exact_match: paired(&by_seed(&runs, em), &by_seed(&sft, em)),
                    heldout_loss: paired(&by_seed(&runs, loss), &by_seed(&sft, loss)),
                }),
                step_s: mean(|r| r.step_s),
                opt_s: mean(|r| r.opt_s),
                mask_stability: (!stability.is_empty()).then(|| spread(&stability)),
            }
        })
        .collect()
}

fn signed(p: &Paired, scale: f64, digits: usize) -> String {
    let text = plus_minus(p.mean, p.se, scale, digits);
    if p.mean >= 0.0 {
        format!("+{text}")
    } else {
        text
    }
}

fn range(s: &Spread, scale: f64, digits: usize) -> String {
    format!("[{:.digits$}, {:.digits$}]", s.min * scale, s.max * scale)
}

/// The table over seeds: mean ± std [min, max] of held-out exact match (%) and loss, the paired
/// difference against SFT (mean ± standard error), step and optimizer times, mask stability.
pub fn table(aggregates: &[Aggregate], before: Option<&Before>) -> String {
    let mut out = format!(
        "{:<8} {:>5} {:>5} {:>13} {:>14} {:>17} {:>18} {:>12} {:>17} {:>9} {:>8} {:>13}\n",
        "method",
        "ratio",
        "seeds",
        "held-out EM %",
        "EM min, max",
        "held-out loss",
        "loss min, max",
        "ΔEM vs SFT",
        "Δloss vs SFT",
        "step ms",
        "optim ms",
        "stability"
    );
    if let Some(b) = before {
        out += &format!(
            "{:<8} {:>5} {:>5} {:>13.1} {:>14} {:>17.4}\n",
            "(before)",
            "-",
            "-",
            b.exact_match * 100.0,
            "",
            b.heldout_loss
        );
    }
    for a in aggregates {
        let (em, loss) = (&a.exact_match, &a.heldout_loss);
        let (d_em, d_loss) = match &a.vs_sft {
            Some(v) => (
                signed(&v.exact_match, 100.0, 1),
                signed(&v.heldout_loss, 1.0, 4),
            ),
            None => ("-".into(), "-".into()),
        };
        let stability = a
            .mask_stability
            .map_or("-".into(), |s| plus_minus(s.mean, s.std, 1.0, 3));
        out += &format!(
            "{:<8} {:>5.2} {:>5} {:>13} {:>14} {:>17} {:>18} {:>12} {:>17} {:>9.1} {:>8.2} {:>13}\n",
            a.method,
            a.mask_ratio,
            em.n,
            plus_minus(em.mean, em.std, 100.0, 1),
            range(em, 100.0, 1),
            plus_minus(loss.mean, loss.std, 1.0, 4),
            range(loss, 1.0, 4),
            d_em,
            d_loss,
            a.step_s * 1e3,
            a.opt_s * 1e3,
            stability
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::result;

    fn run(method: &str, ratio: f64, seed: u64, em: f64, loss: f64) -> MethodResult {
        MethodResult {
            method: method.into(),
            mask_ratio: ratio,
            seed,
            heldout_exact_match: em,
            heldout_loss: loss,
            ..result()
        }
    }

    #[test]
    fn groups_by_method_and_ratio_and_pairs_with_sft_by_seed() {
        let results = [
            run("sft", 0.0, 1, 0.70, 0.30),
            run("gmt", 0.2, 1, 0.75, 0.28),
            run("gmt", 0.5, 1, 0.60, 0.40),
            run("sft", 0.0, 2, 0.80, 0.20),
            run("gmt", 0.5, 2, 0.90, 0.10),
            run("gmt", 0.2, 2, 0.80, 0.22),
        ];
        let aggs = aggregate(&results);
        let keys: Vec<(&str, f64)> = aggs
            .iter()
            .map(|a| (a.method.as_str(), a.mask_ratio))
            .collect();
        assert_eq!(keys, [("sft", 0.0), ("gmt", 0.2), ("gmt", 0.5)]);
        assert!(aggs[0].vs_sft.is_none());
        let gmt02 = &aggs[1];
        assert_eq!(gmt02.seeds, [1, 2]);
        assert!((gmt02.exact_match.mean - 0.775).abs() < 1e-12);
        assert_eq!((gmt02.exact_match.min, gmt02.exact_match.max), (0.75, 0.80));
        // Differences per seed: +0.05 and 0.00.
        let d = &gmt02.vs_sft.as_ref().unwrap().exact_match;
        assert_eq!(d.n, 2);
        assert!((d.mean - 0.025).abs() < 1e-12);
        assert!((d.se.unwrap() - 0.025).abs() < 1e-12, "std 0.0354 / sqrt 2");
        let d_loss = &aggs[2].vs_sft.as_ref().unwrap().heldout_loss;
        assert!((d_loss.mean - 0.0).abs() < 1e-12, "+0.10 and -0.10");
        let text = table(
            &aggs,
            Some(&Before {
                exact_match: 0.1,
                heldout_loss: 2.0,
            }),
        );
        assert_eq!(text.lines().count(), 5);
        assert!(text.contains("77.5 ± 3.5"), "{text}");
        assert!(text.contains("+2.5 ± 2.5"), "{text}");
        assert!(text.contains("(before)"), "{text}");
    }
}
