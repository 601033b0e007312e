//! Mask stability (`GmtAdamW::track_stability`): per tensor, the entries kept at a step and, of
//! those, the ones kept at the step taken before, against masks recomputed from the reports (GMT)
//! or the documented random-mask recipe; a skipped step, a checkpoint load and turning tracking
//! off; and tracking never changes the step's result.

mod common;

use common::adamw_ref::{bits, draw_grads, draw_params, gmt_keeps, random_keeps, views, views_mut};
use common::Dist;
use gradmask::tuning::CPU_CHUNK_LEN;
use gradmask::{
    AdamWConfig, GmtAdamW, MaskConfig, MaskMode, MaskStability, MaskedUpdate, Scope,
    TensorStability, TensorTable,
};

/// Sizes 1, 3 and odd ones, a partial last 64-entry word, and a tensor of two chunks.
const LENGTHS: [usize; 6] = [1, 3, 999, 40_001, 64, CPU_CHUNK_LEN + 70];
/// Tensor 2 is dense, tensor 3 frozen.
const DENSE: usize = 2;
const FROZEN: usize = 3;
const RATIO: f64 = 0.4;

fn optimizer(scope: Scope, mode: MaskMode, track: bool) -> (GmtAdamW, TensorTable) {
    let dense: Vec<bool> = (0..LENGTHS.len()).map(|t| t == DENSE).collect();
    let table = TensorTable::new(&LENGTHS, &[0, 1, 1, 0, 1, 0])
        .unwrap()
        .with_dense(&dense)
        .unwrap();
    let mask = MaskConfig {
        mask_ratio: RATIO,
        scope,
        masked: MaskedUpdate::ZeroGrad,
    };
    let mut opt = GmtAdamW::new(table.clone(), AdamWConfig::default(), mask)
        .unwrap()
        .with_mask_mode(mode);
    let frozen: Vec<bool> = (0..LENGTHS.len()).map(|t| t == FROZEN).collect();
    opt.set_frozen(&frozen).unwrap();
    opt.track_stability(track);
    (opt, table)
}

/// Per tensor: entries kept now, and of those the ones kept before (none without `before`).
fn expected(now: &[Vec<bool>], before: Option<&[Vec<bool>]>) -> Vec<TensorStability> {
    now.iter()
        .enumerate()
        .map(|(t, keeps)| {
            let kept_now = |i: usize| keeps[i] && t != FROZEN;
            let kept_before = |i: usize| before.is_some_and(|b| b[t][i]) && t != FROZEN;
            TensorStability {
                kept: (0..keeps.len()).filter(|&i| kept_now(i)).count() as u64,
                kept_before: (0..keeps.len())
                    .filter(|&i| kept_now(i) && kept_before(i))
                    .count() as u64,
            }
        })
        .collect()
}

#[test]
fn stability_counts_entries_kept_at_consecutive_steps() {
    let dists = [Dist::LogNormal, Dist::Ties, Dist::Normal];
    for scope in [Scope::PerTensor, Scope::Groups, Scope::Global] {
        for mode in [MaskMode::Gmt, MaskMode::Random { seed: 9 }] {
            let what = format!("{scope:?} {mode:?}");
            let (mut opt, table) = optimizer(scope, mode, true);
            let (mut twin, _) = optimizer(scope, mode, false);
            let mut params = draw_params(&LENGTHS, 1);
            let mut twin_params = params.clone();
            assert!(opt.stability().is_none(), "{what}: no step yet");
            let mut previous: Option<Vec<Vec<bool>>> = None;
            for step in 1..=5u64 {
                let mut grads: Vec<Vec<f32>> = draw_grads(&LENGTHS, &dists, 77, step);
                if step == 3 {
                    grads[4][10] = f32::NAN; // skipped: nothing changes
                }
                let report = opt
                    .step(&mut views_mut(&mut params), &views(&grads), 1e-3)
                    .unwrap();
                let twin_report = twin
                    .step(&mut views_mut(&mut twin_params), &views(&grads), 1e-3)
                    .unwrap();
                // Debug text: a random mask's thresholds are NaN, which `==` never matches.
                assert_eq!(
                    format!("{report:?}"),
                    format!("{twin_report:?}"),
                    "{what}: tracking changed the report"
                );
                for (a, b) in params.iter().zip(&twin_params) {
                    assert_eq!(bits(a), bits(b), "{what}: tracking changed the parameters");
                }
                let stability: &MaskStability = opt.stability().unwrap();
                if report.skipped {
                    assert_eq!(stability.step, report.step, "{what}: still the step before");
                    continue;
                }
                let keeps = match mode {
                    MaskMode::Gmt => gmt_keeps(&table, scope, &report, &views(&grads)),
                    MaskMode::Random { seed } => random_keeps(&table, seed, report.step, RATIO),
                };
                assert_eq!(stability.step, report.step);
                assert_eq!(
                    stability.has_previous,
                    previous.is_some(),
                    "{what} step {step}"
                );
                let want = expected(&keeps, previous.as_deref());
                assert_eq!(stability.tensors, want, "{what} step {step}");
                assert_eq!(
                    stability.tensors[DENSE].kept_before,
                    if step == 1 { 0 } else { 999 }
                );
                previous = Some(keeps);
            }
            let late = opt.stability().unwrap();
            let fraction = late.fraction(0..LENGTHS.len()).unwrap();
            let (kept, before) = late
                .tensors
                .iter()
                .fold((0, 0), |(k, b), t| (k + t.kept, b + t.kept_before));
            assert_eq!(fraction, before as f64 / kept as f64);
            if matches!(mode, MaskMode::Random { .. }) {
                // Independent draws: about (1 - r) of the kept entries were kept before (dense
                // tensor aside, which keeps everything every step).
                let big = late.tensors[5];
                let share = big.kept_before as f64 / big.kept as f64;
                assert!((share - (1.0 - RATIO)).abs() < 0.01, "{what}: {share}");
            }
            opt.track_stability(false);
            assert!(opt.stability().is_none());
        }
    }
}

#[test]
fn a_loaded_checkpoint_has_no_previous_mask() {
    let dir = std::env::temp_dir().join(format!("gradmask-stability-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("opt.safetensors");
    let (mut opt, _) = optimizer(Scope::PerTensor, MaskMode::Gmt, true);
    let mut params = draw_params(&LENGTHS, 2);
    let grads: Vec<Vec<f32>> = draw_grads(&LENGTHS, &[Dist::Normal], 5, 1);
    for _ in 0..2 {
        opt.step(&mut views_mut(&mut params), &views(&grads), 1e-3)
            .unwrap();
    }
    // The same gradients twice: every kept entry was kept before.
    let s = opt.stability().unwrap();
    assert!(s.has_previous);
    assert_eq!(s.fraction(0..LENGTHS.len()), Some(1.0));
    opt.save(&path).unwrap();
    opt.load(&path).unwrap();
    opt.step(&mut views_mut(&mut params), &views(&grads), 1e-3)
        .unwrap();
    let s = opt.stability().unwrap();
    assert_eq!((s.step, s.has_previous), (3, false));
    assert!(s.tensors.iter().all(|t| t.kept_before == 0));
    assert_eq!(s.fraction(0..LENGTHS.len()), None);
    std::fs::remove_dir_all(dir).unwrap();
}
