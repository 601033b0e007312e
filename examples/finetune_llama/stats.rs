//! Statistics over seeds: mean, sample standard deviation, min and max of a score, and the paired
//! difference of two methods (the mean of the per-seed differences and its standard error).

use serde::Serialize;

/// Mean, sample standard deviation (n - 1 in the denominator; `None`, written `null`, below 2
/// values), min and max.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub n: usize,
    pub mean: f64,
    pub std: Option<f64>,
    pub min: f64,
    pub max: f64,
}

/// The spread of `values` (all NaN, n = 0, when empty).
pub fn spread(values: &[f64]) -> Spread {
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    let std = (n >= 2).then(|| {
        let ss: f64 = values.iter().map(|x| (x - mean) * (x - mean)).sum();
        (ss / (n - 1) as f64).sqrt()
    });
    Spread {
        n,
        mean,
        std,
        min: values.iter().copied().fold(f64::NAN, f64::min),
        max: values.iter().copied().fold(f64::NAN, f64::max),
    }
}

/// A paired difference, `a - b` per seed: its mean and standard error (`std / sqrt(n)`; `null`
/// below 2 pairs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Paired {
    pub n: usize,
    pub mean: f64,
    pub se: Option<f64>,
}

/// The difference `a - b` over the seeds both have; `a` and `b` hold (seed, value).
pub fn paired(a: &[(u64, f64)], b: &[(u64, f64)]) -> Paired {
    let diffs: Vec<f64> = a
        .iter()
        .filter_map(|(seed, x)| b.iter().find(|(s, _)| s == seed).map(|(_, y)| x - y))
        .collect();
    let s = spread(&diffs);
    Paired {
        n: s.n,
        mean: s.mean,
        se: s.std.map(|std| std / (s.n as f64).sqrt()),
    }
}

/// `12.3 ± 4.5` (scaled by `scale`), or `12.3` alone without a spread.
pub fn plus_minus(mean: f64, std: Option<f64>, scale: f64, digits: usize) -> String {
    match std {
        Some(std) => format!(
            "{:.digits$} ± {:.digits$}",
            mean * scale,
            std * scale,
            digits = digits
        ),
        None => format!("{:.digits$}", mean * scale, digits = digits),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_matches_hand_computed_values() {
        let s = spread(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]);
        assert_eq!((s.n, s.mean, s.min, s.max), (8, 5.0, 2.0, 9.0));
        // Sum of squares 32 over n - 1 = 7.
        assert!((s.std.unwrap() - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        let one = spread(&[3.5]);
        assert_eq!((one.mean, one.std, one.min, one.max), (3.5, None, 3.5, 3.5));
        assert!(spread(&[]).mean.is_nan());
    }

    #[test]
    fn paired_differences_match_seeds_not_positions() {
        // Seed 3 exists only in `a` and is left out; the order of `b` does not matter.
        let a = [(1, 0.70), (2, 0.60), (3, 0.99), (4, 0.80)];
        let b = [(4, 0.75), (1, 0.60), (2, 0.60)];
        let p = paired(&a, &b);
        assert_eq!(p.n, 3);
        let d = [0.10, 0.0, 0.05];
        let mean = d.iter().sum::<f64>() / 3.0;
        assert!((p.mean - mean).abs() < 1e-12);
        let std = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
        assert!((p.se.unwrap() - std / 3f64.sqrt()).abs() < 1e-12);
        assert_eq!(paired(&a[..1], &b).se, None);
        assert_eq!(plus_minus(0.123, Some(0.045), 100.0, 1), "12.3 ± 4.5");
        assert_eq!(plus_minus(0.123, None, 100.0, 1), "12.3");
    }
}
