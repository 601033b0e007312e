//! Shared by the sharded tests and bench: random shard layouts, ranks as threads, exact views.

use std::ops::Range;

use gradmask::{Collective, Error, Selection, ThreadCollective};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

/// A random layout of tensors of `lengths` over `world` ranks (`[rank][tensor]`): each tensor is
/// cut at `world - 1` points (repeats give empty shards) handed to the ranks in a random order.
/// Cuts favour the hard places: next to a leaf boundary of the sum of g^2 (multiples of 512),
/// one entry from another cut (one-entry shards), the ends (a rank holding nothing).
pub fn random_layout(rng: &mut StdRng, lengths: &[usize], world: usize) -> Vec<Vec<Range<usize>>> {
    let mut out = vec![Vec::with_capacity(lengths.len()); world];
    for &len in lengths {
        let mut cuts: Vec<usize> = Vec::with_capacity(world + 1);
        for _ in 1..world {
            let cut = match rng.random_range(0..5) {
                0 => [0, len][rng.random_range(0..2)],
                1 if len > 0 => {
                    let leaf = rng.random_range(0..=len / 512) * 512;
                    (leaf + rng.random_range(0..3)).saturating_sub(1).min(len)
                }
                2 if !cuts.is_empty() => (cuts[cuts.len() - 1] + 1).min(len),
                _ => rng.random_range(0..=len),
            };
            cuts.push(cut);
        }
        cuts.push(0);
        cuts.push(len);
        cuts.sort_unstable();
        let mut ranks: Vec<usize> = (0..world).collect();
        ranks.shuffle(rng);
        for (piece, &rank) in cuts.windows(2).zip(&ranks) {
            out[rank].push(piece[0]..piece[1]);
        }
    }
    out
}

/// Runs `f(rank, collective)` on `world` threads, one per rank; returns the results in rank order.
pub fn run_ranks<R: Send>(world: usize, f: impl Fn(usize, ThreadCollective) -> R + Sync) -> Vec<R> {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = ThreadCollective::group(world)
            .into_iter()
            .map(|c| s.spawn(move || f(c.rank(), c)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a rank panicked"))
            .collect()
    })
}

/// Each tensor's slice `ranges[t]`.
pub fn slices<'a, T>(data: &'a [Vec<T>], ranges: &[Range<usize>]) -> Vec<&'a [T]> {
    data.iter()
        .zip(ranges)
        .map(|(d, r)| &d[r.clone()])
        .collect()
}

/// Every field of a selection as bits, for exact comparisons (NaN sums included).
pub fn selection_bits(s: &Selection) -> Vec<u64> {
    let mut out = vec![s.non_finite, s.sum_sq.to_bits()];
    for g in &s.groups {
        out.extend([
            g.len,
            g.target,
            g.kept,
            u64::from(g.threshold_key),
            u64::from(g.threshold.to_bits()),
            g.sum_sq.to_bits(),
            g.non_finite,
        ]);
    }
    out
}

/// A collective that fails on its `fail_at`-th call (0-based) of `all_reduce_u64`, like a lost
/// peer; the others pass through.
pub struct Failing {
    inner: ThreadCollective,
    calls: usize,
    fail_at: usize,
}

impl Failing {
    pub fn new(inner: ThreadCollective, fail_at: usize) -> Self {
        Failing {
            inner,
            calls: 0,
            fail_at,
        }
    }
}

impl Collective for Failing {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn world(&self) -> usize {
        self.inner.world()
    }
    fn all_reduce_u64(&mut self, buffer: &mut [u64]) -> gradmask::Result<()> {
        self.calls += 1;
        if self.calls - 1 == self.fail_at {
            return Err(Error::Collective("injected".into()));
        }
        self.inner.all_reduce_u64(buffer)
    }
    fn all_reduce_f64(&mut self, buffer: &mut [f64]) -> gradmask::Result<()> {
        self.inner.all_reduce_f64(buffer)
    }
}
