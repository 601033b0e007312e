//! Per-method results, the comparison table, `summary.json` and the merged `metrics.jsonl`.

use std::path::Path;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::hf::write_atomic;

/// What one method achieved; also `<method>/result.json`, so a resumed comparison skips finished methods.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodResult {
    pub method: String,
    /// Mask ratio the method ran with (for one-off: the fraction of the delta dropped).
    pub mask_ratio: f64,
    /// The run's seed (batch order, random mask, HFT's choice, the built-in model's init).
    #[serde(default)]
    pub seed: u64,
    pub heldout_exact_match: f64,
    pub heldout_loss: f64,
    /// Median wall time of one optimizer step, and its split (forward, backward, optimizer).
    pub step_s: f64,
    #[serde(default)]
    pub fwd_s: f64,
    #[serde(default)]
    pub bwd_s: f64,
    pub opt_s: f64,
    pub tokens_per_s: f64,
    pub first_train_loss: f64,
    pub final_train_loss: f64,
    pub steps: u64,
    /// Wall time of the whole method, evaluation included.
    pub wall_s: f64,
    /// Mask stability over the second half of training: the fraction of the entries kept at a
    /// step that were also kept at the step before, over every layer (masking methods only).
    #[serde(default)]
    pub mask_stability: Option<f64>,
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_atomic(path, |tmp| {
        Ok(std::fs::write(tmp, serde_json::to_string_pretty(value)?)?)
    })
}

/// The comparison table as text.
pub fn table(results: &[MethodResult]) -> String {
    let mut out = format!(
        "{:<8} {:>6} {:>12} {:>13} {:>10} {:>9} {:>9} {:>9} {:>9}\n",
        "method",
        "ratio",
        "held-out EM",
        "held-out loss",
        "step (ms)",
        "fwd",
        "bwd",
        "optim",
        "tok/s"
    );
    for r in results {
        out += &format!(
            "{:<8} {:>6.2} {:>11.1}% {:>13.4} {:>10.1} {:>9.1} {:>9.1} {:>9.2} {:>9.0}\n",
            r.method,
            r.mask_ratio,
            r.heldout_exact_match * 100.0,
            r.heldout_loss,
            r.step_s * 1e3,
            r.fwd_s * 1e3,
            r.bwd_s * 1e3,
            r.opt_s * 1e3,
            r.tokens_per_s
        );
    }
    out
}

/// Concatenates the methods' `metrics.jsonl` files into the run's `metrics.jsonl`.
pub fn merge_metrics(out: &Path, methods: &[String]) -> Result<()> {
    let mut text = String::new();
    for method in methods {
        let path = out.join(method).join("metrics.jsonl");
        if path.exists() {
            text += &std::fs::read_to_string(path)?;
        }
    }
    write_atomic(&out.join("metrics.jsonl"), |tmp| {
        Ok(std::fs::write(tmp, text)?)
    })
}

/// Output folder name for a run started now: `YYYYMMDD-HHMMSS` (UTC).
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A result with every field set (GMT at 0.5, 25% exact match).
    pub fn result() -> MethodResult {
        MethodResult {
            method: "gmt".into(),
            mask_ratio: 0.5,
            seed: 1,
            heldout_exact_match: 0.25,
            heldout_loss: 1.5,
            step_s: 0.1,
            fwd_s: 0.03,
            bwd_s: 0.06,
            opt_s: 0.01,
            tokens_per_s: 1000.0,
            first_train_loss: 4.0,
            final_train_loss: 1.0,
            steps: 10,
            wall_s: 2.0,
            mask_stability: None,
        }
    }

    #[test]
    fn table_has_a_row_per_method() {
        let r = result();
        let text = table(&[
            r.clone(),
            MethodResult {
                method: "sft".into(),
                ..r
            },
        ]);
        assert_eq!(text.lines().count(), 3);
        assert!(text.contains("25.0%"));
        assert_eq!(timestamp().len(), 15);
    }
}
