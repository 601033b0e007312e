//! Sharded selection on the CPU engine: 2 to 8 ranks as threads, random shard layouts, every
//! scope and dtype. Every rank must get the unsharded selection bit for bit (thresholds, kept
//! counts, sums of g^2, non-finite counts), and bad input must fail on every rank.

mod common;

use std::ops::Range;

use common::shards::{random_layout, run_ranks, selection_bits, slices, Failing};
use common::{draw, Dist, FromF32, ALL_DISTS};
use gradmask::{
    CpuSelector, Error, GradElem, Scope, ShardLayout, Shards, TensorTable, ThreadCollective,
};
use half::{bf16, f16};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The unsharded selection's bits, and every rank's, with the calls each rank made.
fn both<T: GradElem>(
    table: &TensorTable,
    scope: Scope,
    layout: &[Vec<Range<usize>>],
    grads: &[Vec<T>],
    ratio: f64,
) -> (Vec<u64>, Vec<(Vec<u64>, u64)>) {
    let whole: Vec<&[T]> = grads.iter().map(|g| &g[..]).collect();
    let want = selection_bits(
        CpuSelector::new(table, scope)
            .select(&whole, ratio)
            .unwrap(),
    );
    let got = run_ranks(layout.len(), |rank, collective| {
        let layout = ShardLayout::new(table, layout, rank).unwrap();
        let mine: Vec<Range<usize>> = (0..table.len()).map(|t| layout.local_range(t)).collect();
        let shards = Shards::new(layout, collective).unwrap();
        let mut selector = CpuSelector::sharded(table, scope, shards).unwrap();
        let bits = selection_bits(selector.select(&slices(grads, &mine), ratio).unwrap());
        (bits, selector.comm_stats().calls)
    });
    (want, got)
}

/// One random case: tables of small odd sizes (0, 1, 3, one leaf and a bit), random groups and
/// dense flags, a random layout over `world` ranks.
fn case<T: FromF32>(seed: u64, world: usize, scope: Scope, ratio: f64, dist: Dist) {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = rng.random_range(1..6);
    let sizes = [0usize, 1, 3, 7, 513, 1031, 2600];
    let lengths: Vec<usize> = (0..n)
        .map(|_| sizes[rng.random_range(0..sizes.len())])
        .collect();
    let groups: Vec<u32> = (0..n).map(|_| rng.random_range(0..n as u32)).collect();
    let dense: Vec<bool> = (0..n).map(|_| rng.random_range(0..5) == 0).collect();
    let table = TensorTable::new(&lengths, &groups)
        .unwrap()
        .with_dense(&dense)
        .unwrap();
    let grads: Vec<Vec<T>> = lengths
        .iter()
        .enumerate()
        .map(|(t, &len)| draw::<T>(dist, len, seed ^ t as u64))
        .collect();
    let layout = random_layout(&mut rng, &lengths, world);
    let (want, got) = both(&table, scope, &layout, &grads, ratio);
    for (rank, (bits, calls)) in got.iter().enumerate() {
        assert_eq!(
            bits, &want,
            "rank {rank} of {world}, {lengths:?}, {layout:?}"
        );
        // Pass 1, then one per refinement digit while a group refines.
        let digits = if T::DTYPE == gradmask::DType::F32 {
            3
        } else {
            2
        };
        assert!((1..=digits).contains(calls), "{calls} calls");
    }
}

fn scope_of(i: u8) -> Scope {
    [Scope::PerTensor, Scope::Global, Scope::Groups][i as usize % 3]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn sharded_selection_is_the_unsharded_one(
        seed in any::<u64>(),
        world in 2usize..=8,
        scope in 0u8..3,
        ratio in prop_oneof![Just(0.0), Just(1.0), Just(0.5), Just(0.99), 0.0f64..1.0],
        dist in 0usize..ALL_DISTS.len(),
        dtype in 0u8..3,
    ) {
        let (scope, dist) = (scope_of(scope), ALL_DISTS[dist]);
        match dtype {
            0 => case::<f32>(seed, world, scope, ratio, dist),
            1 => case::<bf16>(seed, world, scope, ratio, dist),
            _ => case::<f16>(seed, world, scope, ratio, dist),
        }
    }
}

/// Several chunks per tensor (over 2^20 entries), flat (ZeRO) and per-tensor (FSDP) layouts,
/// several calls in a row (the ranks' call counts must stay equal), Inf and NaN entries.
#[test]
fn large_tensors_and_repeated_calls() {
    let lengths = [2_600_001usize, 4097, 1];
    let table = TensorTable::per_tensor(&lengths).unwrap();
    let mut grads: Vec<Vec<f32>> = lengths
        .iter()
        .map(|&len| draw::<f32>(Dist::LogNormal, len, len as u64))
        .collect();
    for (world, flat) in [(3, true), (4, false)] {
        let layouts: Vec<ShardLayout> = (0..world)
            .map(|r| match flat {
                true => ShardLayout::flat(&table, world, r).unwrap(),
                false => ShardLayout::per_tensor(&table, world, r).unwrap(),
            })
            .collect();
        let ranges: Vec<Vec<Range<usize>>> = layouts
            .iter()
            .map(|l| (0..table.len()).map(|t| l.local_range(t)).collect())
            .collect();
        for scope in [Scope::PerTensor, Scope::Global] {
            for ratio in [0.2, 0.999] {
                let (want, got) = both(&table, scope, &ranges, &grads, ratio);
                assert!(
                    got.iter().all(|(bits, _)| bits == &want),
                    "{scope:?} {ratio}"
                );
            }
        }
    }
    grads[0][1_234_567] = f32::INFINITY;
    grads[1][5] = f32::NAN;
    let ranges: Vec<Vec<Range<usize>>> = (0..2)
        .map(|r| {
            let l = ShardLayout::flat(&table, 2, r).unwrap();
            (0..table.len()).map(|t| l.local_range(t)).collect()
        })
        .collect();
    let (want, got) = both(&table, Scope::Global, &ranges, &grads, 0.5);
    assert!(got.iter().all(|(bits, _)| bits == &want));
    assert_eq!(want[0], 2, "two non-finite entries");

    // Three calls in a row on the same selectors.
    let calls = run_ranks(2, |rank, collective| {
        let layout = ShardLayout::flat(&table, 2, rank).unwrap();
        let mine = ranges[rank].clone();
        let mut selector = CpuSelector::sharded(
            &table,
            Scope::PerTensor,
            Shards::new(layout, collective).unwrap(),
        )
        .unwrap();
        (0..3)
            .map(|i| {
                let ratio = [0.1, 0.0, 0.7][i];
                selection_bits(selector.select(&slices(&grads, &mine), ratio).unwrap())
            })
            .collect::<Vec<_>>()
    });
    let whole: Vec<&[f32]> = grads.iter().map(|g| &g[..]).collect();
    let mut unsharded = CpuSelector::new(&table, Scope::PerTensor);
    for (i, ratio) in [0.1, 0.0, 0.7].into_iter().enumerate() {
        let want = selection_bits(unsharded.select(&whole, ratio).unwrap());
        assert!(calls.iter().all(|c| c[i] == want), "call {i}");
    }
}

#[test]
fn bad_input_fails_on_every_rank_and_changes_nothing() {
    let lengths = [3000usize, 5];
    let table = TensorTable::per_tensor(&lengths).unwrap();
    let grads: Vec<Vec<f32>> = lengths.iter().map(|&l| draw(Dist::Normal, l, 3)).collect();
    let layout = |r| ShardLayout::flat(&table, 2, r).unwrap();
    let mine =
        |l: &ShardLayout| -> Vec<Range<usize>> { (0..2).map(|t| l.local_range(t)).collect() };

    // Ranks that disagree on the scope (or table, or layout): at construction.
    let built = run_ranks(2, |rank, collective| {
        let scope = [Scope::PerTensor, Scope::Global][rank];
        CpuSelector::sharded(
            &table,
            scope,
            Shards::new(layout(rank), collective).unwrap(),
        )
        .err()
    });
    assert!(built
        .iter()
        .all(|e| matches!(e, Some(Error::ShardMismatch { .. }))));

    // Ranks that disagree on the ratio, then on the dtype: at the call; the last selection stays.
    let outcomes = run_ranks(2, |rank, collective| {
        let l = layout(rank);
        let mine = mine(&l);
        let mut selector =
            CpuSelector::sharded(&table, Scope::Global, Shards::new(l, collective).unwrap())
                .unwrap();
        let first = selection_bits(selector.select(&slices(&grads, &mine), 0.5).unwrap());
        let ratio = selector
            .select(&slices(&grads, &mine), [0.5, 0.25][rank])
            .err();
        let dtype = if rank == 0 {
            selector.select(&slices(&grads, &mine), 0.5).err()
        } else {
            let halves: Vec<Vec<bf16>> = grads
                .iter()
                .map(|g| g.iter().map(|&x| bf16::from_f32(x)).collect())
                .collect();
            selector.select(&slices(&halves, &mine), 0.5).err()
        };
        (first == selection_bits(selector.last()), ratio, dtype)
    });
    for (unchanged, ratio, dtype) in outcomes {
        assert!(unchanged);
        assert_eq!(
            ratio,
            Some(Error::ShardMismatch {
                what: "the mask ratio"
            })
        );
        assert_eq!(
            dtype,
            Some(Error::ShardMismatch {
                what: "the gradient dtype"
            })
        );
    }

    // A collective that fails in pass 1 or in a refinement digit: an error, the last selection
    // stays.
    for fail_at in [1, 2, 3, 5] {
        let outcomes = run_ranks(2, |rank, inner| {
            let l = layout(rank);
            let mine = mine(&l);
            let failing = Failing::new(inner, fail_at);
            let mut selector =
                CpuSelector::sharded(&table, Scope::Global, Shards::new(l, failing).unwrap())
                    .unwrap();
            let (mut before, mut err) = (selection_bits(selector.last()), None);
            for ratio in [0.5, 0.3, 0.7] {
                match selector.select(&slices(&grads, &mine), ratio) {
                    Ok(selection) => before = selection_bits(selection),
                    Err(e) => {
                        err = Some(e);
                        break;
                    }
                }
            }
            (before == selection_bits(selector.last()), err)
        });
        for (unchanged, err) in outcomes {
            assert!(unchanged, "fail_at {fail_at}");
            assert!(
                matches!(err, Some(Error::Collective(_))),
                "fail_at {fail_at}: {err:?}"
            );
        }
    }

    // Layouts that do not fit: another table, a collective of another world.
    let other = TensorTable::per_tensor(&[3000, 6]).unwrap();
    let mut group = ThreadCollective::group(2);
    let shards = Shards::new(layout(1), group.pop().unwrap()).unwrap();
    assert!(matches!(
        CpuSelector::sharded(&other, Scope::Global, shards),
        Err(Error::ShardLayout(_))
    ));
    assert!(matches!(
        Shards::new(layout(1), ThreadCollective::group(3).pop().unwrap()),
        Err(Error::ShardLayout(_))
    ));
}
