//! The work list: every tensor's entries held by this rank, cut into runs of at most one chunk.
//! The CPU selector, the CPU optimizer and the CUDA selector build their chunk lists from it.
//!
//! Runs start at multiples of the chunk length in the tensor's own index (clipped to this rank's
//! slice), so an unsharded table gives the runs `start = k * chunk_len`, and every chunk of a
//! sharded one lies inside one chunk of the unsharded table.

use std::ops::Range;

use crate::tuning::SUM_LEAF_LEN;
use crate::TensorTable;

/// A run of at most one chunk of one tensor's local slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run {
    pub tensor: usize,
    /// First entry, within the local buffer of the tensor (its slice on this rank).
    pub start: usize,
    pub len: usize,
    /// First entry, in the concatenation of every (whole) tensor: the rng's index.
    pub global: u64,
    /// First entry, in the concatenation of this rank's slices: where its optimizer state is.
    pub local_flat: u64,
    /// The part of the run (relative to `start`) made of whole leaves of the sum of g^2; the rest
    /// is in leaves that a shard boundary cuts (see `cpu::exact_sum`).
    pub whole: Range<usize>,
}

/// The whole-leaf part of the slice `lo..hi` of a tensor of `n` entries: from the first leaf
/// boundary at or after `lo` to the last at or before `hi` (or to `hi = n`, the tensor's last
/// leaf being whole there). Empty (at `hi`) when no leaf lies inside.
pub(crate) fn whole_leaves(lo: usize, hi: usize, n: usize) -> Range<usize> {
    let first = lo.next_multiple_of(SUM_LEAF_LEN).min(hi);
    let last = if hi == n {
        hi
    } else {
        hi / SUM_LEAF_LEN * SUM_LEAF_LEN
    };
    first..last.max(first)
}

/// The runs of `table`'s tensors restricted to `local[t]` (tensor coordinates), cut at multiples
/// of `chunk_len` (a multiple of `SUM_LEAF_LEN`), tensor by tensor.
pub(crate) fn runs(table: &TensorTable, local: &[Range<usize>], chunk_len: usize) -> Vec<Run> {
    debug_assert_eq!(chunk_len % SUM_LEAF_LEN, 0);
    let mut out = Vec::new();
    let mut local_flat = 0u64;
    for (tensor, range) in local.iter().enumerate() {
        let n = table.lengths()[tensor];
        let whole = whole_leaves(range.start, range.end, n);
        let mut at = range.start;
        while at < range.end {
            let end = ((at / chunk_len + 1) * chunk_len).min(range.end);
            let (w_lo, w_hi) = (whole.start.clamp(at, end), whole.end.clamp(at, end));
            out.push(Run {
                tensor,
                start: at - range.start,
                len: end - at,
                global: table.offsets()[tensor] + at as u64,
                local_flat: local_flat + (at - range.start) as u64,
                whole: w_lo - at..w_hi.max(w_lo) - at,
            });
            at = end;
        }
        local_flat += range.len() as u64;
    }
    out
}

/// Every tensor whole: the unsharded slices.
pub(crate) fn whole_tensors(table: &TensorTable) -> Vec<Range<usize>> {
    table.lengths().iter().map(|&len| 0..len).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_leaves_of_slices() {
        let n = 10_000;
        assert_eq!(whole_leaves(0, n, n), 0..n);
        assert_eq!(whole_leaves(10, 20, n), 20..20);
        assert_eq!(whole_leaves(10, 600, n), 512..512);
        assert_eq!(whole_leaves(10, 100, 100), 100..100);
        assert_eq!(whole_leaves(0, 600, n), 0..512);
        assert_eq!(whole_leaves(512, 700, 700), 512..700);
        assert_eq!(whole_leaves(5, 2000, n), 512..1536);
    }

    #[test]
    fn runs_follow_chunk_boundaries_of_the_whole_tensor() {
        let table = TensorTable::per_tensor(&[3000, 0, 1024]).unwrap();
        let unsharded = runs(&table, &whole_tensors(&table), 1024);
        let starts: Vec<(usize, usize, usize)> = unsharded
            .iter()
            .map(|r| (r.tensor, r.start, r.len))
            .collect();
        assert_eq!(
            starts,
            vec![(0, 0, 1024), (0, 1024, 1024), (0, 2048, 952), (2, 0, 1024)]
        );
        assert!(unsharded.iter().all(|r| r.whole == (0..r.len)));
        let sharded = runs(&table, &[1000..2100, 0..0, 1024..1024], 1024);
        let got: Vec<(usize, usize, u64, u64)> = sharded
            .iter()
            .map(|r| (r.start, r.len, r.global, r.local_flat))
            .collect();
        // Cut where the unsharded chunks are cut (1024, 2048); tensor 2's slice is empty.
        assert_eq!(
            got,
            vec![
                (0, 24, 1000, 0),
                (24, 1024, 1024, 24),
                (1048, 52, 2048, 1048)
            ]
        );
        assert_eq!(sharded[0].whole, 24..24); // 1000..1024 lies in the cut leaf 512..1024
        assert_eq!(sharded[1].whole, 0..1024); // 1024..2048 whole
        assert_eq!(sharded[2].whole, 0..0); // 2048..2100 in the cut leaf 2048..2560
    }
}
