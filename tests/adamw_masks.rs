//! What happens to masked entries: `Freeze` leaves them bit-identical, `ZeroGrad` applies the g = 0
//! update, the random mask keeps about `1 - r` by the documented recipe, fixed-frozen and dense
//! tensors behave as documented.

mod common;

use common::adamw_ref::{bits, draw_grads, draw_params, gmt_keeps, random_keeps, views, views_mut};
use common::Dist;
use gradmask::adamw::math::{adamw_update, StepScalars};
use gradmask::tuning::CPU_CHUNK_LEN;
use gradmask::{
    AdamWConfig, Error, GmtAdamW, MaskConfig, MaskMode, MaskedUpdate, Scope, StepReport,
    TensorTable,
};

const LENGTHS: [usize; 5] = [1, 3, 999, 40_001, CPU_CHUNK_LEN + 1];
const DISTS: [Dist; 3] = [Dist::LogNormal, Dist::Ties, Dist::Normal];

fn config() -> AdamWConfig {
    AdamWConfig {
        weight_decay: 0.05,
        max_grad_norm: Some(0.01),
        ..AdamWConfig::default()
    }
}

fn mask(mask_ratio: f64, masked: MaskedUpdate) -> MaskConfig {
    MaskConfig {
        mask_ratio,
        scope: Scope::PerTensor,
        masked,
    }
}

/// The state before a per-tensor GMT step, its report, and which entries it kept.
struct Stepped {
    old_p: Vec<Vec<f32>>,
    old_m: Vec<f32>,
    old_v: Vec<f32>,
    report: StepReport,
    keeps: Vec<Vec<bool>>,
}

/// One step of `opt` (per-tensor GMT over `table`) at lr 1e-3, with what the checks need.
fn step_gmt(
    opt: &mut GmtAdamW,
    table: &TensorTable,
    params: &mut [Vec<f32>],
    grads: &[Vec<f32>],
) -> Stepped {
    let (old_p, old_m, old_v) = (
        params.to_vec(),
        opt.moments().0.to_vec(),
        opt.moments().1.to_vec(),
    );
    let report = opt
        .step(&mut views_mut(params), &views(grads), 1e-3)
        .unwrap();
    let keeps = gmt_keeps(table, Scope::PerTensor, &report, &views(grads));
    Stepped {
        old_p,
        old_m,
        old_v,
        report,
        keeps,
    }
}

#[test]
fn freeze_leaves_masked_entries_bit_identical() {
    let table = TensorTable::per_tensor(&LENGTHS).unwrap();
    for ratio in [0.3, 0.99, 1.0] {
        let mut opt =
            GmtAdamW::new(table.clone(), config(), mask(ratio, MaskedUpdate::Freeze)).unwrap();
        let mut params = draw_params(&LENGTHS, 1);
        for step in 1..=3 {
            let grads: Vec<Vec<f32>> = draw_grads(&LENGTHS, &DISTS, 2, step);
            let Stepped {
                old_p,
                old_m,
                old_v,
                report,
                keeps,
            } = step_gmt(&mut opt, &table, &mut params, &grads);
            let (m, v) = opt.moments();
            let mut masked = 0u64;
            for t in 0..LENGTHS.len() {
                let at = table.offsets()[t] as usize;
                for i in (0..LENGTHS[t]).filter(|&i| !keeps[t][i]) {
                    masked += 1;
                    assert_eq!(params[t][i].to_bits(), old_p[t][i].to_bits());
                    assert_eq!(m[at + i].to_bits(), old_m[at + i].to_bits());
                    assert_eq!(v[at + i].to_bits(), old_v[at + i].to_bits());
                }
            }
            let total = table.total_len();
            let kept: u64 = report.groups.iter().map(|g| g.kept).sum();
            assert_eq!(
                masked,
                total - kept,
                "ties are kept, so masked <= ratio * n"
            );
            assert!(masked > 0);
            if ratio == 1.0 {
                assert_eq!(masked, total);
            }
        }
    }
}

#[test]
fn zero_grad_masked_entries_follow_the_zero_gradient_update() {
    let table = TensorTable::per_tensor(&LENGTHS).unwrap();
    let mut opt =
        GmtAdamW::new(table.clone(), config(), mask(0.8, MaskedUpdate::ZeroGrad)).unwrap();
    let mut params = draw_params(&LENGTHS, 3);
    for step in 1..=3u64 {
        let grads: Vec<Vec<f32>> = draw_grads(&LENGTHS, &DISTS, 4, step);
        let Stepped {
            old_p,
            old_m,
            old_v,
            report: _,
            keeps,
        } = step_gmt(&mut opt, &table, &mut params, &grads);
        // The multiplier does not matter for g = 0, so the exact scalars are known.
        let s = StepScalars::new(&config(), step, 1e-3, 1.0);
        let (m, v) = opt.moments();
        let mut masked = 0;
        for t in 0..LENGTHS.len() {
            let at = table.offsets()[t] as usize;
            for i in (0..LENGTHS[t]).filter(|&i| !keeps[t][i]) {
                masked += 1;
                let (p, mm, vv) = adamw_update(old_p[t][i], old_m[at + i], old_v[at + i], 0.0, &s);
                assert_eq!(params[t][i].to_bits(), p.to_bits(), "tensor {t} entry {i}");
                assert_eq!(
                    (m[at + i].to_bits(), v[at + i].to_bits()),
                    (mm.to_bits(), vv.to_bits())
                );
                if step == 1 {
                    assert_eq!(
                        params[t][i],
                        old_p[t][i] * s.decay,
                        "weight decay only at step 1"
                    );
                }
            }
        }
        assert!(masked > 0);
    }
}

#[test]
fn gmt_that_keeps_everything_equals_mask_off_bit_for_bit() {
    // A ratio so small that floor(r * n) = 0 in every group: the selection runs and keeps all, and
    // must give the bits of the mask-off path (same norm, same update).
    let table = TensorTable::per_tensor(&LENGTHS).unwrap();
    let mut results = Vec::new();
    for ratio in [0.0, 1e-9] {
        let mut opt =
            GmtAdamW::new(table.clone(), config(), mask(ratio, MaskedUpdate::Freeze)).unwrap();
        let mut params = draw_params(&LENGTHS, 5);
        let mut norms = Vec::new();
        for step in 1..=3 {
            let grads: Vec<Vec<f32>> = draw_grads(&LENGTHS, &DISTS, 6, step);
            let report = opt
                .step(&mut views_mut(&mut params), &views(&grads), 1e-3)
                .unwrap();
            assert!(report.groups.iter().all(|g| g.kept == g.len));
            norms.push(report.grad_norm.to_bits());
            // The scan's per-group stats equal the selection's.
            norms.extend(
                report
                    .groups
                    .iter()
                    .flat_map(|g| [g.len, g.kept, g.sum_sq.to_bits(), g.non_finite]),
            );
        }
        results.push((
            params
                .concat()
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>(),
            bits(opt.moments().0),
            bits(opt.moments().1),
            norms,
        ));
    }
    assert_eq!(results[0], results[1]);
}

#[test]
fn random_mask_keeps_about_one_minus_r_by_the_documented_recipe() {
    let table = TensorTable::per_tensor(&LENGTHS).unwrap();
    let ratio = 0.75;
    let run = |seed: u64| {
        let mut opt = GmtAdamW::new(table.clone(), config(), mask(ratio, MaskedUpdate::Freeze))
            .unwrap()
            .with_mask_mode(MaskMode::Random { seed });
        let mut params = draw_params(&LENGTHS, 7);
        let mut reports = Vec::new();
        for step in 1..=2 {
            let grads: Vec<Vec<f32>> = draw_grads(&LENGTHS, &DISTS, 8, step);
            let old = params.clone();
            let (old_m, old_v) = (bits(opt.moments().0), bits(opt.moments().1));
            let report = opt
                .step(&mut views_mut(&mut params), &views(&grads), 1e-3)
                .unwrap();
            // With Freeze, the entries whose state changed are exactly the ones the recipe keeps:
            // a kept entry's p, m and v cannot all stay put (weight decay moves p when m = 0, and
            // m = 0.9 m + 0.1 g equals m only when g = m, which then changes v or p).
            let keeps = random_keeps(&table, seed, step, ratio);
            let (m, v) = (bits(opt.moments().0), bits(opt.moments().1));
            for t in 0..LENGTHS.len() {
                for i in 0..LENGTHS[t] {
                    let at = table.offsets()[t] as usize + i;
                    let moved = params[t][i].to_bits() != old[t][i].to_bits()
                        || m[at] != old_m[at]
                        || v[at] != old_v[at];
                    assert_eq!(
                        moved, keeps[t][i],
                        "seed {seed} step {step} tensor {t} entry {i}: p {} -> {}, g {}",
                        old[t][i], params[t][i], grads[t][i]
                    );
                }
                let kept = keeps[t].iter().filter(|&&k| k).count() as u64;
                assert_eq!(report.groups[t].kept, kept);
                assert_eq!(
                    report.groups[t].target,
                    LENGTHS[t] as u64 - (ratio * LENGTHS[t] as f64) as u64
                );
            }
            reports.push(report.groups.iter().map(|g| g.kept).collect::<Vec<_>>());
        }
        (params, reports)
    };
    let (params_a, kept_a) = run(11);
    let (params_b, kept_b) = run(11);
    assert_eq!(params_a, params_b);
    assert_eq!(kept_a, kept_b);
    let (_, kept_c) = run(12);
    assert_ne!(kept_a, kept_c, "another seed gives another mask");
    // About 1 - r over the large tensor: binomial, within 6 sigma.
    let n = *LENGTHS.last().unwrap() as f64;
    let share = kept_a[0][LENGTHS.len() - 1] as f64 / n;
    let sigma = (ratio * (1.0 - ratio) / n).sqrt();
    assert!((share - (1.0 - ratio)).abs() < 6.0 * sigma, "{share}");
    assert_ne!(kept_a[0], kept_a[1], "another step gives another mask");
}

#[test]
fn fixed_frozen_tensors_are_untouched_and_dense_ones_always_kept() {
    let lengths = [5, 700, 31];
    let table = TensorTable::per_tensor(&lengths)
        .unwrap()
        .with_dense(&[false, false, true])
        .unwrap();
    let mut opt = GmtAdamW::new(table.clone(), config(), mask(0.9, MaskedUpdate::Freeze)).unwrap();
    assert_eq!(
        opt.set_frozen(&[true]),
        Err(Error::CountMismatch {
            what: "frozen flags",
            expected: 3,
            got: 1
        })
    );
    opt.set_frozen(&[true, false, false]).unwrap();
    let mut params = draw_params(&lengths, 9);
    let frozen_start = params[0].clone();
    for step in 1..=3 {
        let grads: Vec<Vec<f32>> = draw_grads(&lengths, &[Dist::Normal], 10, step);
        let dense_before = params[2].clone();
        opt.step(&mut views_mut(&mut params), &views(&grads), 1e-3)
            .unwrap();
        assert_eq!(bits(&params[0]), bits(&frozen_start));
        assert!(opt.moments().0[..5]
            .iter()
            .chain(&opt.moments().1[..5])
            .all(|&x| x.to_bits() == 0));
        assert!(
            params[2].iter().zip(&dense_before).all(|(a, b)| a != b),
            "every dense entry moves"
        );
    }
    // Unfreezing lets the tensor move again.
    opt.set_frozen(&[false, false, false]).unwrap();
    let grads: Vec<Vec<f32>> = draw_grads(&lengths, &[Dist::Normal], 10, 4);
    opt.step(&mut views_mut(&mut params), &views(&grads), 1e-3)
        .unwrap();
    assert_ne!(bits(&params[0]), bits(&frozen_start));
}
