//! The sharded CPU optimizer: 2 to 8 ranks as threads, random layouts, every precision and mask
//! mode. Each rank's updated slices (parameters, m, v, master weights) and every report must be
//! the unsharded optimizer's bit for bit; per-rank checkpoints resume bit-exactly; ranks that
//! disagree, and a failing collective, give errors that change nothing.

mod common;

use std::ops::Range;

use common::shards::{random_layout, run_ranks, slices, Failing};
use common::{draw_f32, Dist, TempDir};
use gradmask::{
    AdamWConfig, Error, GmtAdamW, MaskConfig, MaskMode, MaskedUpdate, Scope, ShardLayout, Shards,
    StepReport, TensorTable,
};
use half::{bf16, f16};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    F32,
    F32Bf16Grads,
    F32F16Grads,
    Master,
    Stochastic,
}

/// What one run looks like: the table, configs, mode and the gradients of every step.
struct Setup {
    table: TensorTable,
    adamw: AdamWConfig,
    mask: MaskConfig,
    mode: MaskMode,
    frozen: Vec<bool>,
    kind: Kind,
    params: Vec<Vec<f32>>,
    grads: Vec<Vec<Vec<f32>>>,
}

/// Every report field as bits.
fn report_bits(r: &StepReport) -> Vec<u64> {
    let mut out = vec![u64::from(r.skipped), r.step, r.grad_norm.to_bits()];
    for g in &r.groups {
        out.extend([
            g.len,
            g.target,
            g.kept,
            u64::from(g.threshold_key),
            g.sum_sq.to_bits(),
        ]);
        out.extend([u64::from(g.threshold.to_bits()), g.non_finite]);
    }
    out
}

/// Takes the steps `steps` of `setup` on parameters held as f32 (bf16 kinds round them), on this
/// rank's slices `mine`; returns the reports' bits.
fn run(
    opt: &mut GmtAdamW,
    s: &Setup,
    mine: &[Range<usize>],
    params: &mut [Vec<f32>],
    steps: Range<usize>,
) -> Vec<Vec<u64>> {
    let mut reports = Vec::new();
    for step in steps {
        let lr = 1e-3 * (1.0 + step as f64);
        let grads: Vec<Vec<f32>> = s.grads[step]
            .iter()
            .zip(mine)
            .map(|(g, r)| g[r.clone()].to_vec())
            .collect();
        let report = match s.kind {
            Kind::F32 | Kind::F32Bf16Grads | Kind::F32F16Grads => {
                let mut p: Vec<&mut [f32]> = params.iter_mut().map(|p| &mut p[..]).collect();
                if s.kind == Kind::F32 {
                    let g: Vec<&[f32]> = grads.iter().map(|g| &g[..]).collect();
                    opt.step(&mut p, &g, lr)
                } else if s.kind == Kind::F32Bf16Grads {
                    let g: Vec<Vec<bf16>> = grads.iter().map(|g| to_bf16(g)).collect();
                    opt.step(&mut p, &g.iter().map(|g| &g[..]).collect::<Vec<_>>(), lr)
                } else {
                    let g: Vec<Vec<f16>> = grads
                        .iter()
                        .map(|g| g.iter().map(|&x| f16::from_f32(x)).collect())
                        .collect();
                    opt.step(&mut p, &g.iter().map(|g| &g[..]).collect::<Vec<_>>(), lr)
                }
            }
            Kind::Master | Kind::Stochastic => {
                let mut p: Vec<Vec<bf16>> = params.iter().map(|p| to_bf16(p)).collect();
                let g: Vec<Vec<bf16>> = grads.iter().map(|g| to_bf16(g)).collect();
                let g: Vec<&[bf16]> = g.iter().map(|g| &g[..]).collect();
                let mut pm: Vec<&mut [bf16]> = p.iter_mut().map(|p| &mut p[..]).collect();
                let report = if s.kind == Kind::Master {
                    opt.step_bf16_master(&mut pm, &g, lr)
                } else {
                    opt.step_bf16_stochastic(&mut pm, &g, lr, 99)
                };
                for (dst, src) in params.iter_mut().zip(&p) {
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d = s.to_f32());
                }
                report
            }
        };
        reports.push(report_bits(&report.unwrap()));
    }
    reports
}

/// Copies of this rank's slices `mine` of every tensor.
fn owned(data: &[Vec<f32>], mine: &[Range<usize>]) -> Vec<Vec<f32>> {
    slices(data, mine).iter().map(|x| x.to_vec()).collect()
}

fn to_bf16(x: &[f32]) -> Vec<bf16> {
    x.iter().map(|&v| bf16::from_f32(v)).collect()
}

/// This rank's slice of each whole tensor, flat (the layout of the optimizer's state).
fn flat_slices(whole: &[f32], table: &TensorTable, mine: &[Range<usize>]) -> Vec<u32> {
    let mut out = Vec::new();
    for (t, r) in mine.iter().enumerate() {
        let at = table.offsets()[t] as usize;
        out.extend(whole[at + r.start..at + r.end].iter().map(|x| x.to_bits()));
    }
    out
}

fn sharded(s: &Setup, layout: ShardLayout, c: gradmask::ThreadCollective) -> GmtAdamW {
    let shards = Shards::new(layout, c).unwrap();
    let mut opt = GmtAdamW::sharded(s.table.clone(), s.adamw, s.mask, shards)
        .unwrap()
        .with_mask_mode(s.mode);
    opt.set_frozen(&s.frozen).unwrap();
    opt
}

/// Runs `setup` unsharded and sharded on `layout`; asserts every rank matches.
fn compare(s: &Setup, layout: &[Vec<Range<usize>>]) {
    let n_steps = s.grads.len();
    let mut whole_params = s.params.clone();
    let mut unsharded = GmtAdamW::new(s.table.clone(), s.adamw, s.mask)
        .unwrap()
        .with_mask_mode(s.mode);
    unsharded.set_frozen(&s.frozen).unwrap();
    unsharded.track_stability(true);
    let all: Vec<Range<usize>> = s.table.lengths().iter().map(|&l| 0..l).collect();
    let want = run(&mut unsharded, s, &all, &mut whole_params, 0..n_steps);
    let (m, v) = unsharded.moments();
    let master = unsharded.master().map(|m| m.to_vec());
    let stability = run_ranks(layout.len(), |rank, c| {
        let l = ShardLayout::new(&s.table, layout, rank).unwrap();
        let mine = &layout[rank];
        let mut params = owned(&s.params, mine);
        let mut opt = sharded(s, l, c);
        opt.track_stability(true);
        let got = run(&mut opt, s, mine, &mut params, 0..n_steps);
        assert_eq!(got, want, "rank {rank}: reports");
        for (t, (p, r)) in params.iter().zip(mine).enumerate() {
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(p),
                bits(&whole_params[t][r.clone()]),
                "rank {rank} tensor {t}"
            );
        }
        let (lm, lv) = opt.moments();
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(lm), flat_slices(m, &s.table, mine), "rank {rank}: m");
        assert_eq!(bits(lv), flat_slices(v, &s.table, mine), "rank {rank}: v");
        if let Some(master) = &master {
            let got = opt.master().expect("master weights");
            assert_eq!(
                bits(got),
                flat_slices(master, &s.table, mine),
                "rank {rank}"
            );
        }
        opt.stability().cloned()
    });
    // Mask stability per rank counts its own slices: added over the ranks, the unsharded counts.
    let want = unsharded.stability().cloned();
    let mut added = stability[0].clone();
    if let Some(added) = &mut added {
        for other in &stability[1..] {
            let other = other.as_ref().expect("every rank tracks");
            assert_eq!(
                (other.step, other.has_previous),
                (added.step, added.has_previous)
            );
            for (total, t) in added.tensors.iter_mut().zip(&other.tensors) {
                total.kept += t.kept;
                total.kept_before += t.kept_before;
            }
        }
    }
    assert_eq!(added, want, "mask stability");
}

fn setup(seed: u64, kind: Kind, mode: u8, steps: usize) -> Setup {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = rng.random_range(1..5);
    let sizes = [0usize, 1, 3, 511, 513, 1500];
    let lengths: Vec<usize> = (0..n)
        .map(|_| sizes[rng.random_range(0..sizes.len())])
        .collect();
    let groups: Vec<u32> = (0..n).map(|_| rng.random_range(0..n as u32)).collect();
    let dense: Vec<bool> = (0..n).map(|_| rng.random_range(0..6) == 0).collect();
    let table = TensorTable::new(&lengths, &groups)
        .unwrap()
        .with_dense(&dense)
        .unwrap();
    let ratio = [0.0, 0.3, 0.9, 1.0][rng.random_range(0..4)];
    let mode_ = if mode == 1 {
        MaskMode::Random { seed: 7 }
    } else {
        MaskMode::Gmt
    };
    let adamw = AdamWConfig {
        weight_decay: [0.0, 0.1][rng.random_range(0..2)],
        max_grad_norm: [None, Some(1e-3)][rng.random_range(0..2)],
        ..AdamWConfig::default()
    };
    let mask = MaskConfig {
        mask_ratio: ratio,
        scope: [Scope::PerTensor, Scope::Global, Scope::Groups][rng.random_range(0..3)],
        masked: [MaskedUpdate::ZeroGrad, MaskedUpdate::Freeze][rng.random_range(0..2)],
    };
    let dists = [Dist::LogNormal, Dist::Ties, Dist::Normal];
    let grads = (0..steps)
        .map(|step| {
            let mut g: Vec<Vec<f32>> = lengths
                .iter()
                .enumerate()
                .map(|(t, &len)| draw_f32(dists[step % 3], len, seed ^ (step * 16 + t) as u64))
                .collect();
            if step == 1 && lengths[0] > 0 {
                g[0][lengths[0] / 2] = f32::NAN; // a skipped step
            }
            g
        })
        .collect();
    let params = lengths
        .iter()
        .map(|&len| draw_f32(Dist::Normal, len, seed + 1))
        .collect();
    let frozen = (0..n).map(|_| rng.random_range(0..3) == 0).collect();
    Setup {
        table,
        adamw,
        mask,
        mode: mode_,
        frozen,
        kind,
        params,
        grads,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn sharded_steps_are_the_unsharded_ones(
        seed in any::<u64>(),
        world in 2usize..=8,
        kind in 0usize..5,
        mode in 0u8..2,
    ) {
        let kind = [Kind::F32, Kind::F32Bf16Grads, Kind::F32F16Grads, Kind::Master, Kind::Stochastic][kind];
        let s = setup(seed, kind, mode, 4);
        let mut rng = StdRng::seed_from_u64(seed ^ 1);
        let layout = random_layout(&mut rng, s.table.lengths(), world);
        compare(&s, &layout);
    }
}

/// Each rank saves its slices after 2 steps; new optimizers (a new group) load them and take 2
/// more: the same bits as 4 unsharded steps. A rank cannot load another rank's file.
#[test]
fn per_rank_checkpoints_resume_bit_exactly() {
    let dir = TempDir::new("shard-ckpt");
    for (kind, mode) in [(Kind::F32, 0), (Kind::Master, 0), (Kind::Stochastic, 1)] {
        let lengths = [1500usize, 3, 700];
        let mut s = setup(11, kind, mode, 4);
        s.table = TensorTable::per_tensor(&lengths).unwrap();
        s.mask.mask_ratio = 0.5;
        s.frozen = vec![false; 3];
        s.params = lengths
            .iter()
            .map(|&l| draw_f32(Dist::Normal, l, 5))
            .collect();
        s.grads = (0..4)
            .map(|i| {
                lengths
                    .iter()
                    .map(|&l| draw_f32(Dist::LogNormal, l, 40 + i))
                    .collect()
            })
            .collect();
        let world = 3;
        let layout: Vec<Vec<Range<usize>>> = (0..world)
            .map(|r| {
                let l = ShardLayout::flat(&s.table, world, r).unwrap();
                (0..3).map(|t| l.local_range(t)).collect()
            })
            .collect();
        let mut whole = s.params.clone();
        let mut unsharded = GmtAdamW::new(s.table.clone(), s.adamw, s.mask)
            .unwrap()
            .with_mask_mode(s.mode);
        let all: Vec<Range<usize>> = lengths.iter().map(|&l| 0..l).collect();
        let want = run(&mut unsharded, &s, &all, &mut whole, 0..4);
        let path = |rank: usize| dir.0.join(format!("{kind:?}-{rank}.safetensors"));
        let halfway: Vec<Vec<Vec<f32>>> = run_ranks(world, |rank, c| {
            let mine = &layout[rank];
            let mut params = owned(&s.params, mine);
            let mut opt = sharded(&s, ShardLayout::new(&s.table, &layout, rank).unwrap(), c);
            assert_eq!(run(&mut opt, &s, mine, &mut params, 0..2), want[..2]);
            opt.save(&path(rank)).unwrap();
            params
        });
        run_ranks(world, |rank, c| {
            let mine = &layout[rank];
            let mut opt = sharded(&s, ShardLayout::new(&s.table, &layout, rank).unwrap(), c);
            let other = opt.load(&path((rank + 1) % world)).unwrap_err();
            assert!(matches!(other, Error::Checkpoint { .. }), "{other}");
            assert_eq!(opt.step_count(), 0, "a failed load changes nothing");
            opt.load(&path(rank)).unwrap();
            let mut params = halfway[rank].clone();
            assert_eq!(run(&mut opt, &s, mine, &mut params, 2..4), want[2..]);
            for (t, (p, r)) in params.iter().zip(mine).enumerate() {
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(p), bits(&whole[t][r.clone()]), "{kind:?} rank {rank}");
            }
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(opt.moments().0),
                flat_slices(unsharded.moments().0, &s.table, mine)
            );
        });
        // An unsharded optimizer cannot load a rank's file either.
        let mut plain = GmtAdamW::new(s.table.clone(), s.adamw, s.mask).unwrap();
        assert!(matches!(
            plain.load(&path(0)),
            Err(Error::Checkpoint { .. })
        ));
    }
}

/// Ranks built with other configs fail at construction; ranks whose steps differ (learning rate),
/// and a collective that fails in any all-reduce of a step, fail the step on every rank with
/// nothing changed: parameters, moments, step counter.
#[test]
fn disagreeing_ranks_and_failing_collectives_change_nothing() {
    let table = TensorTable::per_tensor(&[1200, 7]).unwrap();
    let mask = |ratio| MaskConfig {
        mask_ratio: ratio,
        ..MaskConfig::default()
    };
    let layout = |rank| ShardLayout::flat(&table, 2, rank).unwrap();
    let built = run_ranks(2, |rank, c| {
        let shards = Shards::new(layout(rank), c).unwrap();
        GmtAdamW::sharded(
            table.clone(),
            AdamWConfig::default(),
            mask([0.5, 0.4][rank]),
            shards,
        )
        .err()
    });
    assert!(built
        .iter()
        .all(|e| matches!(e, Some(Error::ShardMismatch { .. }))));

    let grads: Vec<Vec<f32>> = [1200, 7]
        .iter()
        .map(|&l| draw_f32(Dist::Normal, l, 1))
        .collect();
    // GMT (3 all-reduces per f32 step after construction) and mask off (1).
    for (ratio, fail_ats) in [
        (0.5, vec![None, Some(1), Some(2), Some(3)]),
        (0.0, vec![Some(1)]),
    ] {
        for fail_at in fail_ats {
            let outcomes = run_ranks(2, |rank, inner| {
                let l = layout(rank);
                let mine: Vec<Range<usize>> = (0..2).map(|t| l.local_range(t)).collect();
                let failing = Failing::new(inner, fail_at.unwrap_or(usize::MAX));
                let shards = Shards::new(l, failing).unwrap();
                let mut opt =
                    GmtAdamW::sharded(table.clone(), AdamWConfig::default(), mask(ratio), shards)
                        .unwrap();
                let g: Vec<Vec<f32>> = grads
                    .iter()
                    .zip(&mine)
                    .map(|(g, r)| g[r.clone()].to_vec())
                    .collect();
                let g: Vec<&[f32]> = g.iter().map(|g| &g[..]).collect();
                let mut params: Vec<Vec<f32>> = mine.iter().map(|r| vec![1.0; r.len()]).collect();
                let mut p: Vec<&mut [f32]> = params.iter_mut().map(|p| &mut p[..]).collect();
                // Without an injected failure, the ranks disagree on the learning rate.
                let lr = if fail_at.is_none() {
                    [1e-3, 2e-3][rank]
                } else {
                    1e-3
                };
                let err = opt.step(&mut p, &g, lr).unwrap_err();
                let untouched = params.iter().flatten().all(|&x| x == 1.0)
                    && opt.moments().0.iter().all(|&m| m == 0.0)
                    && opt.step_count() == 0;
                (err, untouched)
            });
            for (err, untouched) in outcomes {
                assert!(untouched, "ratio {ratio}, fail_at {fail_at:?}");
                match fail_at {
                    None => assert!(matches!(err, Error::ShardMismatch { .. }), "{err}"),
                    Some(_) => assert!(matches!(err, Error::Collective(_)), "{err}"),
                }
            }
        }
    }
}
