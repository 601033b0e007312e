//! The sharded CPU optimizer: 2 to 8 ranks as threads, random layouts, every precision and mask
//! mode. Each rank's updated slices (parameters, m, v, master weights), every report and the mask
//! stability (added over the ranks) must be the unsharded optimizer's bit for bit. Checkpoints and
//! bad input: `shard_adamw_state.rs`.

mod common;

use std::ops::Range;

use common::shard_steps::{flat_slices, owned, run, setup, sharded, Kind, Setup};
use common::shards::{random_layout, run_ranks};
use gradmask::{GmtAdamW, ShardLayout};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

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
