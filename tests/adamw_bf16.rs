//! bf16 parameters (with f32 master weights, or stochastically rounded) and bf16 gradients against
//! the f64 reference (tolerances in `tests/common/adamw_ref.rs`), the documented rounding recipe and
//! its lack of bias.

mod common;

use common::adamw_ref::{
    before, bits, check_step, clipped_config, draw_grads, draw_params, gmt_keeps, views, views_mut,
    widen, Tol,
};
use common::Dist;
use gradmask::adamw::math::{adamw_update, masked_update, StepScalars};
use gradmask::rng::{mix, stochastic_round_bf16, ROUNDING_DOMAIN};
use gradmask::tuning::CPU_CHUNK_LEN;
use gradmask::{AdamWConfig, GmtAdamW, MaskConfig, MaskedUpdate, Scope, TensorTable};
use half::bf16;

/// Sizes 0, 1, 3, odd, and one tensor that spans two CPU chunks.
const LENGTHS: [usize; 6] = [0, 1, 3, 1001, 65_537, CPU_CHUNK_LEN + 3];
const DISTS: [Dist; 4] = [Dist::Normal, Dist::LogNormal, Dist::Ties, Dist::Outlier];
const F32_TOL: Tol = Tol {
    rtol: 1e-6,
    p_rel: 0.0,
};

fn to_bf16(params: &[Vec<f32>]) -> Vec<Vec<bf16>> {
    params
        .iter()
        .map(|p| p.iter().map(|&x| bf16::from_f32(x)).collect())
        .collect()
}

#[test]
fn bf16_params_with_master_weights_match_the_reference() {
    let table = TensorTable::per_tensor(&LENGTHS).unwrap();
    let config = clipped_config();
    let mask = MaskConfig {
        mask_ratio: 0.5,
        ..MaskConfig::default()
    };
    let mut opt = GmtAdamW::new(table.clone(), config, mask).unwrap();
    assert!(opt.master().is_none());
    let mut params = to_bf16(&draw_params(&LENGTHS, 8));
    for step in 1..=3u64 {
        let grads: Vec<Vec<bf16>> = draw_grads(&LENGTHS, &DISTS, 9, step);
        // The master starts as the bf16 parameters, widened.
        let old_master = match opt.master() {
            Some(master) => table
                .offsets()
                .windows(2)
                .map(|w| {
                    master[w[0] as usize..w[1] as usize]
                        .iter()
                        .map(|&x| f64::from(x))
                        .collect()
                })
                .collect(),
            None => widen(&params),
        };
        let old = before(&opt, old_master);
        let report = opt
            .step_bf16_master(&mut views_mut(&mut params), &views(&grads), 1e-3)
            .unwrap();
        let keeps = gmt_keeps(&table, Scope::PerTensor, &report, &views(&grads));
        let master = opt.master().unwrap();
        let after_master: Vec<Vec<f64>> = table
            .offsets()
            .windows(2)
            .map(|w| {
                master[w[0] as usize..w[1] as usize]
                    .iter()
                    .map(|&x| f64::from(x))
                    .collect()
            })
            .collect();
        let (m, v) = opt.moments();
        let g = views(&grads);
        let masked = MaskedUpdate::ZeroGrad;
        check_step(
            table.offsets(),
            &config,
            masked,
            step,
            1e-3,
            &old,
            &g,
            &keeps,
            &after_master,
            m,
            v,
            F32_TOL,
        );
        let rne = Tol {
            rtol: 1e-6,
            p_rel: 2f64.powi(-8),
        };
        check_step(
            table.offsets(),
            &config,
            masked,
            step,
            1e-3,
            &old,
            &g,
            &keeps,
            &widen(&params),
            m,
            v,
            rne,
        );
        let flat: Vec<bf16> = params.concat();
        assert!(flat
            .iter()
            .zip(master)
            .all(|(p, &x)| p.to_bits() == bf16::from_f32(x).to_bits()));
    }
}

#[test]
fn bf16_params_with_stochastic_rounding_follow_the_recipe_and_the_reference() {
    let table = TensorTable::per_tensor(&LENGTHS).unwrap();
    let config = AdamWConfig {
        weight_decay: 0.01,
        grad_scale: Some(4.0),
        ..AdamWConfig::default()
    };
    let mask = MaskConfig {
        mask_ratio: 0.3,
        masked: MaskedUpdate::Freeze,
        ..MaskConfig::default()
    };
    let mut opt = GmtAdamW::new(table.clone(), config, mask).unwrap();
    let mut params = to_bf16(&draw_params(&LENGTHS, 10));
    let seed = 0xFEED;
    for step in 1..=3u64 {
        // No outlier: without clipping its square would overflow v (as in any f32 AdamW).
        let grads: Vec<Vec<bf16>> = draw_grads(&LENGTHS, &DISTS[..3], 11, step);
        let old_params = params.clone();
        let old = before(&opt, widen(&params));
        let report = opt
            .step_bf16_stochastic(&mut views_mut(&mut params), &views(&grads), 1e-3, seed)
            .unwrap();
        let keeps = gmt_keeps(&table, Scope::PerTensor, &report, &views(&grads));
        let (m, v) = opt.moments();
        let sr = Tol {
            rtol: 1e-6,
            p_rel: 2f64.powi(-7),
        };
        let masked = MaskedUpdate::Freeze;
        check_step(
            table.offsets(),
            &config,
            masked,
            step,
            1e-3,
            &old,
            &views(&grads),
            &keeps,
            &widen(&params),
            m,
            v,
            sr,
        );
        // Bit for bit, entry by entry, from the documented recipe: the result cannot depend on
        // the chunking.
        let s = StepScalars::new(&config, step, 1e-3, 0.25);
        for t in 0..LENGTHS.len() {
            for i in 0..LENGTHS[t] {
                let at = table.offsets()[t] as usize + i;
                let (p, mm, vv) = masked_update(
                    old_params[t][i].to_f32(),
                    old.m[at],
                    old.v[at],
                    grads[t][i].to_f32(),
                    keeps[t][i],
                    masked,
                    &s,
                );
                let expected = if keeps[t][i] {
                    stochastic_round_bf16(p, mix(seed ^ ROUNDING_DOMAIN, step, at as u64))
                } else {
                    old_params[t][i]
                };
                assert_eq!(
                    params[t][i].to_bits(),
                    expected.to_bits(),
                    "tensor {t} entry {i}"
                );
                assert_eq!(
                    (m[at].to_bits(), v[at].to_bits()),
                    (mm.to_bits(), vv.to_bits())
                );
            }
        }
    }
}

#[test]
fn stochastic_rounding_is_unbiased() {
    // Every entry computes the same f32 value x (about 0.999, three quarters of the way from the
    // bf16 below it to 1.0): the share of entries rounded up must be that fraction.
    let n = 200_000;
    let table = TensorTable::per_tensor(&[n]).unwrap();
    let mut opt = GmtAdamW::new(table, AdamWConfig::default(), MaskConfig::default()).unwrap();
    let mut params = vec![vec![bf16::ONE; n]];
    let grads = vec![vec![bf16::ONE; n]];
    opt.step_bf16_stochastic(&mut views_mut(&mut params), &views(&grads), 1e-3, 42)
        .unwrap();
    let s = StepScalars::new(&AdamWConfig::default(), 1, 1e-3, 1.0);
    let x = adamw_update(1.0, 0.0, 0.0, 1.0, &s).0;
    let (lo, hi) = (bf16::from_f32(1.0 - 2f32.powi(-8)), bf16::ONE);
    assert!(lo.to_f32() < x && x < hi.to_f32());
    let frac = f64::from((x - lo.to_f32()) / (hi.to_f32() - lo.to_f32()));
    assert!((0.6..0.9).contains(&frac), "{frac}");
    let ups = params[0].iter().filter(|&&p| {
        assert!(p == lo || p == hi);
        p == hi
    });
    let share = ups.count() as f64 / n as f64;
    let sigma = (frac * (1.0 - frac) / n as f64).sqrt();
    assert!(
        (share - frac).abs() < 6.0 * sigma,
        "share {share}, expected {frac} +- {sigma}"
    );
}

#[test]
fn master_weights_start_from_the_params() {
    let table = TensorTable::per_tensor(&[3, 5]).unwrap();
    let mut opt = GmtAdamW::new(table, AdamWConfig::default(), MaskConfig::default()).unwrap();
    let mut params = to_bf16(&draw_params(&[3, 5], 12));
    let start: Vec<f32> = params.concat().iter().map(|x| x.to_f32()).collect();
    let grads = vec![vec![bf16::ZERO; 3], vec![bf16::ZERO; 5]];
    // lr = 0: nothing moves, so the master must equal the parameters it was initialised from.
    opt.step_bf16_master(&mut views_mut(&mut params), &views(&grads), 0.0)
        .unwrap();
    assert_eq!(bits(opt.master().unwrap()), bits(&start));
}

#[test]
fn f32_grads_that_are_exact_in_bf16_give_the_same_step_either_way() {
    let lengths = [7, 300];
    let table = TensorTable::per_tensor(&lengths).unwrap();
    let mask = MaskConfig {
        mask_ratio: 0.4,
        ..MaskConfig::default()
    };
    let grads: Vec<Vec<bf16>> = draw_grads(&lengths, &[Dist::LogNormal], 13, 1);
    let wide: Vec<Vec<f32>> = grads
        .iter()
        .map(|g| g.iter().map(|x| x.to_f32()).collect())
        .collect();
    let mut results = Vec::new();
    for use_bf16 in [false, true] {
        let mut opt = GmtAdamW::new(table.clone(), clipped_config(), mask).unwrap();
        let mut params = draw_params(&lengths, 14);
        let mut p = views_mut(&mut params);
        if use_bf16 {
            opt.step(&mut p, &views(&grads), 1e-3)
        } else {
            opt.step(&mut p, &views(&wide), 1e-3)
        }
        .unwrap();
        results.push((
            params
                .concat()
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>(),
            bits(opt.moments().0),
        ));
    }
    assert_eq!(results[0], results[1]);
}
