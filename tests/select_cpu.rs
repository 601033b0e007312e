//! The CPU engine against the sort-based oracle: thresholds, kept counts and non-finite counts must
//! be exactly equal; sums of squares within `1e-12 * n * sum`.

mod common;

use common::{draw, oracle, Dist, FromF32, ALL_DISTS};
use gradmask::{CpuSelector, Error, Scope, TensorTable};
use half::{bf16, f16};
use proptest::prelude::*;

/// One table, its gradients and a selection to run.
#[derive(Debug, Clone)]
struct Case {
    lengths: Vec<usize>,
    groups: Vec<u32>,
    dense: Vec<bool>,
    dists: Vec<Dist>,
    seed: u64,
    scope: Scope,
    ratio: f64,
    capacity: Option<usize>,
}

fn check<T: FromF32>(case: &Case) -> Result<(), TestCaseError> {
    let table = TensorTable::new(&case.lengths, &case.groups)
        .unwrap()
        .with_dense(&case.dense)
        .unwrap();
    let grads: Vec<Vec<T>> = case
        .lengths
        .iter()
        .zip(&case.dists)
        .enumerate()
        .map(|(i, (&len, &d))| draw(d, len, case.seed + i as u64))
        .collect();
    let views: Vec<&[T]> = grads.iter().map(|g| &g[..]).collect();
    let mut selector = match case.capacity {
        Some(cap) => CpuSelector::with_candidate_capacity(&table, case.scope, cap),
        None => CpuSelector::new(&table, case.scope),
    };
    // A first call on other gradients (same distributions, other seed; sometimes another ratio)
    // leaves the windows that speculation uses; the second call must be exact whether they hit.
    let earlier: Vec<Vec<T>> = case
        .lengths
        .iter()
        .zip(&case.dists)
        .enumerate()
        .map(|(i, (&len, &d))| draw(d, len, (case.seed ^ 0x5eed) + i as u64))
        .collect();
    let earlier_views: Vec<&[T]> = earlier.iter().map(|g| &g[..]).collect();
    let earlier_ratio = if case.seed.is_multiple_of(3) {
        1.0 - case.ratio
    } else {
        case.ratio
    };
    let first = selector
        .select(&earlier_views, earlier_ratio)
        .unwrap()
        .clone();
    let want_first = oracle(&table, case.scope, &earlier_views, earlier_ratio);
    for (got, want) in first.groups.iter().zip(&want_first) {
        prop_assert_eq!(
            (got.threshold_key, got.kept),
            (want.threshold_key, want.kept)
        );
    }
    let expected = oracle(&table, case.scope, &views, case.ratio);
    let got = selector.select(&views, case.ratio).unwrap();
    prop_assert_eq!(got.groups.len(), expected.len());
    for (g, (got, want)) in got.groups.iter().zip(&expected).enumerate() {
        prop_assert_eq!(got.len, want.len, "group {} len", g);
        prop_assert_eq!(got.target, want.target, "group {} target", g);
        prop_assert_eq!(
            got.threshold_key,
            want.threshold_key,
            "group {} threshold",
            g
        );
        prop_assert_eq!(got.kept, want.kept, "group {} kept", g);
        prop_assert_eq!(got.non_finite, want.non_finite, "group {} non-finite", g);
        prop_assert!(got.kept >= got.target);
    }
    let exact: f64 = views
        .iter()
        .flat_map(|g| g.iter())
        .map(|x| f64::from(x.to_f32()).powi(2))
        .sum();
    let n = table.total_len() as f64;
    if exact.is_finite() {
        prop_assert!(
            (got.sum_sq - exact).abs() <= 1e-12 * n.max(1.0) * exact,
            "sum_sq {} vs {}",
            got.sum_sq,
            exact
        );
    } else {
        prop_assert!(
            !got.sum_sq.is_finite(),
            "sum_sq {} vs {}",
            got.sum_sq,
            exact
        );
    }
    Ok(())
}

fn ratio() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(1.0),
        Just(1e-6),
        Just(1.0 - 1e-6),
        0.0..=1.0f64,
        0.05..0.5f64
    ]
}

fn dist() -> impl Strategy<Value = Dist> {
    proptest::sample::select(ALL_DISTS.to_vec())
}

fn scope() -> impl Strategy<Value = Scope> {
    prop_oneof![
        Just(Scope::PerTensor),
        Just(Scope::Global),
        Just(Scope::Groups)
    ]
}

/// Tables of 1 to 6 tensors with lengths from {0, 1, 3, odd, up to `max_len`}.
fn case(max_len: usize) -> impl Strategy<Value = Case> {
    let len = prop_oneof![
        Just(0usize),
        Just(1usize),
        Just(3usize),
        (0..max_len / 2).prop_map(|n| 2 * n + 1),
        0..max_len
    ];
    (1usize..=6)
        .prop_flat_map(move |n| {
            (
                proptest::collection::vec(len.clone(), n),
                proptest::collection::vec(0..n as u32, n),
                proptest::collection::vec(proptest::bool::weighted(0.15), n),
                proptest::collection::vec(dist(), n),
                any::<u64>(),
                scope(),
                ratio(),
                prop_oneof![3 => Just(None), 1 => (0usize..64).prop_map(Some)],
            )
        })
        .prop_map(
            |(lengths, groups, dense, dists, seed, scope, ratio, capacity)| Case {
                lengths,
                groups,
                dense,
                dists,
                seed,
                scope,
                ratio,
                capacity,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3400, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn f32_small_tables_match_the_oracle(case in case(3000)) { check::<f32>(&case)?; }
    #[test]
    fn bf16_small_tables_match_the_oracle(case in case(3000)) { check::<bf16>(&case)?; }
    #[test]
    fn f16_small_tables_match_the_oracle(case in case(3000)) { check::<f16>(&case)?; }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn f32_large_tensors_match_the_oracle(case in case(1_000_001)) { check::<f32>(&case)?; }
    #[test]
    fn bf16_large_tensors_match_the_oracle(case in case(1_000_001)) { check::<bf16>(&case)?; }
    #[test]
    fn f16_large_tensors_match_the_oracle(case in case(1_000_001)) { check::<f16>(&case)?; }
}

/// Every distribution at 10^6 entries, in every scope, f32, including a starved candidate buffer
/// that forces the re-reading path.
#[test]
fn every_distribution_at_a_million_entries() {
    for (i, &dist) in ALL_DISTS.iter().enumerate() {
        for scope in [Scope::PerTensor, Scope::Global, Scope::Groups] {
            for capacity in [None, Some(17)] {
                let case = Case {
                    lengths: vec![1_000_000, 4097, 3],
                    groups: vec![0, 0, 1],
                    dense: vec![false; 3],
                    dists: vec![dist; 3],
                    seed: 1000 + i as u64,
                    scope,
                    ratio: 0.3,
                    capacity,
                };
                check::<f32>(&case)
                    .unwrap_or_else(|e| panic!("{dist:?} {scope:?} {capacity:?}: {e}"));
            }
        }
    }
}

#[test]
fn planted_non_finite_values_are_counted() {
    let table = TensorTable::new(&[1000, 10, 5], &[0, 0, 1])
        .unwrap()
        .with_dense(&[false, false, true])
        .unwrap();
    let mut a = draw::<f32>(Dist::Normal, 1000, 7);
    let b = draw::<f32>(Dist::Normal, 10, 8);
    let mut c = draw::<f32>(Dist::Normal, 5, 9);
    a[17] = f32::NAN;
    a[500] = f32::NEG_INFINITY;
    c[2] = f32::INFINITY; // in a dense tensor: counted for the step, not for the group
    let mut selector = CpuSelector::new(&table, Scope::Groups);
    let selection = selector.select(&[&a[..], &b[..], &c[..]], 0.2).unwrap();
    assert_eq!(selection.non_finite, 3);
    assert!(selection.has_non_finite());
    assert_eq!(selection.groups[0].non_finite, 2);
    assert_eq!(selection.groups[1].non_finite, 0);
    assert!(selection.sum_sq.is_nan());
}

#[test]
fn bad_inputs_get_typed_errors_and_change_nothing() {
    assert!(matches!(
        TensorTable::new(&[3, 4], &[0, 5]),
        Err(Error::GroupOutOfRange {
            tensor: 1,
            group: 5,
            ..
        })
    ));
    assert!(matches!(
        TensorTable::new(&[3, 4], &[0]),
        Err(Error::CountMismatch { .. })
    ));

    let table = TensorTable::per_tensor(&[3, 4]).unwrap();
    let mut selector = CpuSelector::new(&table, Scope::PerTensor);
    let a = [1.0f32, 2.0, 3.0];
    let b = [4.0f32, 5.0, 6.0, 7.0];
    let before = selector.select(&[&a[..], &b[..]], 0.5).unwrap().clone();
    for ratio in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            selector.select(&[&a[..], &b[..]], ratio),
            Err(Error::InvalidConfig {
                name: "mask_ratio",
                ..
            })
        ));
    }
    assert!(matches!(
        selector.select(&[&a[..], &b[..3]], 0.5),
        Err(Error::LengthMismatch {
            tensor: 1,
            expected: 4,
            got: 3,
            ..
        })
    ));
    assert!(matches!(
        selector.select(&[&a[..]], 0.5),
        Err(Error::CountMismatch { .. })
    ));
    assert_eq!(selector.last(), &before);
}

#[test]
fn the_same_input_twice_gives_the_same_selection() {
    let table = TensorTable::per_tensor(&[100_000, 333]).unwrap();
    let a = draw::<bf16>(Dist::LogNormal, 100_000, 1);
    let b = draw::<bf16>(Dist::Ties, 333, 2);
    let mut selector = CpuSelector::new(&table, Scope::Global);
    let first = selector.select(&[&a[..], &b[..]], 0.37).unwrap().clone();
    let second = selector.select(&[&a[..], &b[..]], 0.37).unwrap();
    assert_eq!(&first, second);
}

/// The bench's naive baseline must agree with the oracle, or its timings compare different work.
#[test]
fn naive_baseline_agrees_with_the_oracle() {
    let lengths = [1usize, 3, 1000, 4097];
    let table = TensorTable::per_tensor(&lengths).unwrap();
    let grads: Vec<Vec<f32>> = lengths
        .iter()
        .map(|&n| draw(Dist::LogNormal, n, n as u64))
        .collect();
    let views: Vec<&[f32]> = grads.iter().map(|g| &g[..]).collect();
    for ratio in [0.0, 0.2, 0.99, 1.0] {
        let want: Vec<u32> = oracle(&table, Scope::PerTensor, &views, ratio)
            .iter()
            .map(|e| e.threshold_key)
            .collect();
        assert_eq!(
            common::naive_per_tensor_thresholds(&views, ratio, &mut Vec::new()),
            want
        );
    }
}

/// Speculation: a second call on similar gradients reads them once (window hits), and the result
/// equals the non-speculative one; a call whose bucket moved far misses and is still exact.
#[test]
fn speculation_hits_on_similar_steps_and_stays_exact() {
    let lengths = [1_500_000usize, 300_000, 70_000, 4096];
    let table = TensorTable::per_tensor(&lengths).unwrap();
    let step = |seed: u64, scale: f32| -> Vec<Vec<f32>> {
        lengths
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                draw::<f32>(Dist::LogNormal, n, seed + i as u64)
                    .iter()
                    .map(|x| x * scale)
                    .collect()
            })
            .collect()
    };
    let mut fast = CpuSelector::new(&table, Scope::PerTensor);
    let mut plain = CpuSelector::new(&table, Scope::PerTensor);
    plain.set_speculation(false);
    for (seed, scale, hits) in [
        (1, 1.0, 3),
        (2, 1.0, 3),
        (3, 1.01, 3),
        (4, 64.0, 0),
        (5, 64.0, 3),
    ] {
        let grads = step(seed, scale);
        let views: Vec<&[f32]> = grads.iter().map(|g| &g[..]).collect();
        let want = plain.select(&views, 0.2).unwrap().clone();
        assert_eq!(plain.window_hits(), 0);
        let got = fast.select(&views, 0.2).unwrap().clone();
        assert_same_selection(&got, &want, &format!("seed {seed}"));
        assert_eq!(
            fast.window_hits(),
            hits,
            "seed {seed}: the 4096-entry tensor never speculates; a first call speculates from a sample"
        );
    }
}

/// Buckets that move by 0 to 4 bins between calls: the window's edges must be exact.
#[test]
fn speculation_is_exact_at_the_window_edges() {
    let lengths = [400_000usize, 250_000];
    let table = TensorTable::per_tensor(&lengths).unwrap();
    let base: Vec<Vec<f32>> = lengths
        .iter()
        .map(|&n| draw(Dist::LogNormal, n, n as u64))
        .collect();
    let mut plain = CpuSelector::new(&table, Scope::PerTensor);
    plain.set_speculation(false);
    let (mut hits, mut calls) = (0, 0);
    for step in 0..40 {
        let mut fast = CpuSelector::new(&table, Scope::PerTensor);
        let base_views: Vec<&[f32]> = base.iter().map(|g| &g[..]).collect();
        fast.select(&base_views, 0.3).unwrap();
        let scale = 2f32.powf(step as f32 / 64.0); // up to 5/8 octave: 0 to ~10 bins away
        let moved: Vec<Vec<f32>> = base
            .iter()
            .map(|g| g.iter().map(|x| x * scale).collect())
            .collect();
        let views: Vec<&[f32]> = moved.iter().map(|g| &g[..]).collect();
        let want = plain.select(&views, 0.3).unwrap().clone();
        assert_same_selection(
            fast.select(&views, 0.3).unwrap(),
            &want,
            &format!("scale {scale}"),
        );
        hits += fast.window_hits();
        calls += lengths.len();
    }
    assert!(
        hits > 0 && hits < calls,
        "the sweep must both hit and miss ({hits} of {calls})"
    );
}

/// Integers bit for bit; sums of squares (summed in another order by the window pass) to 1e-12.
fn assert_same_selection(got: &gradmask::Selection, want: &gradmask::Selection, what: &str) {
    assert_eq!(got.groups.len(), want.groups.len(), "{what}");
    for (a, b) in got.groups.iter().zip(&want.groups) {
        assert_eq!(
            (a.len, a.target, a.threshold_key, a.kept, a.non_finite),
            (b.len, b.target, b.threshold_key, b.kept, b.non_finite),
            "{what}"
        );
        assert!(
            (a.sum_sq - b.sum_sq).abs() <= 1e-12 * b.sum_sq,
            "{what}: {} vs {}",
            a.sum_sq,
            b.sum_sq
        );
    }
    assert_eq!(got.non_finite, want.non_finite, "{what}");
}
