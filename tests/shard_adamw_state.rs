//! The sharded CPU optimizer's state: per-rank checkpoints resume bit-exactly, and ranks that
//! disagree, or a failing collective, give errors on every rank that change nothing.

mod common;

use std::ops::Range;

use common::shard_steps::{flat_slices, owned, run, setup, sharded, Kind};
use common::shards::{run_ranks, Failing};
use common::{draw_f32, Dist, TempDir};
use gradmask::{AdamWConfig, Error, GmtAdamW, MaskConfig, ShardLayout, Shards, TensorTable};

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
