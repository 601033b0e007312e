//! `ShardLayout`: which slice of each tensor every rank holds, validated once.

use std::ops::Range;

use crate::rng::splitmix;
use crate::{Error, Result, TensorTable};

/// The slices of a table's tensors held by each of `world` ranks, and which rank this one is.
///
/// Rank `r` holds entries `offset..offset + len` of tensor `t` (`ranges[r][t]`); a tensor may be
/// cut at any offset and a rank may hold none of it. Across the ranks every tensor is covered
/// exactly once. Every rank builds the same layout (a ZeRO or FSDP trainer derives it from the
/// world size), so each knows where the others' slices end: that is what lets all ranks agree on
/// the few leaves of the sum of g^2 that a boundary cuts (`shard::exchange`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLayout {
    rank: usize,
    /// `ranges[r][t]`: (offset, len) of rank `r`'s slice of tensor `t`.
    ranges: Vec<Vec<(usize, usize)>>,
    /// Tensor lengths of the table the layout was checked against.
    lengths: Vec<usize>,
}

impl ShardLayout {
    /// A layout from every rank's ranges (`ranges[r][t]`, tensor coordinates), for rank `rank`.
    /// Rejects ([`Error::ShardLayout`]) no ranks, a rank outside them, a rank without one range
    /// per tensor, a range past its tensor's end, and ranges of a tensor that overlap or leave a
    /// gap. Empty ranges are allowed anywhere.
    pub fn new(table: &TensorTable, ranges: &[Vec<Range<usize>>], rank: usize) -> Result<Self> {
        let bad = |msg: String| Err(Error::ShardLayout(msg));
        if ranges.is_empty() {
            return bad("no ranks".into());
        }
        if rank >= ranges.len() {
            return bad(format!("rank {rank} of a world of {}", ranges.len()));
        }
        for (r, mine) in ranges.iter().enumerate() {
            if mine.len() != table.len() {
                let n = mine.len();
                return bad(format!(
                    "rank {r} has {n} ranges for {} tensors",
                    table.len()
                ));
            }
        }
        let mut pieces = Vec::with_capacity(ranges.len());
        for (t, &len) in table.lengths().iter().enumerate() {
            pieces.clear();
            for (r, mine) in ranges.iter().enumerate() {
                let range = &mine[t];
                if range.start > range.end || range.end > len {
                    return bad(format!(
                        "rank {r}, tensor {t}: {range:?} is not inside 0..{len}"
                    ));
                }
                if !range.is_empty() {
                    pieces.push((range.start, range.end, r));
                }
            }
            pieces.sort_unstable();
            let mut covered = 0;
            for &(start, end, r) in &pieces {
                if start < covered {
                    return bad(format!("tensor {t}: rank {r}'s {start}..{end} overlaps"));
                }
                if start > covered {
                    return bad(format!("tensor {t}: no rank holds {covered}..{start}"));
                }
                covered = end;
            }
            if covered != len {
                return bad(format!("tensor {t}: no rank holds {covered}..{len}"));
            }
        }
        Ok(ShardLayout {
            rank,
            ranges: ranges
                .iter()
                .map(|mine| mine.iter().map(|r| (r.start, r.len())).collect())
                .collect(),
            lengths: table.lengths().to_vec(),
        })
    }

    /// ZeRO style: the concatenation of every tensor (table order) cut into `world` parts of
    /// equal size (the first `total % world` one entry longer); tensors are cut where the parts
    /// meet.
    pub fn flat(table: &TensorTable, world: usize, rank: usize) -> Result<Self> {
        let total = table.total_len() as usize;
        let bounds: Vec<usize> = (0..=world.max(1))
            .map(|r| r * (total / world.max(1)) + r.min(total % world.max(1)))
            .collect();
        let ranges: Vec<Vec<Range<usize>>> = (0..world)
            .map(|r| {
                (0..table.len())
                    .map(|t| {
                        let first = table.offsets()[t] as usize;
                        let (lo, hi) = (
                            bounds[r].max(first),
                            bounds[r + 1].min(first + table.lengths()[t]),
                        );
                        if lo < hi {
                            lo - first..hi - first
                        } else {
                            0..0
                        }
                    })
                    .collect()
            })
            .collect();
        Self::new(table, &ranges, rank)
    }

    /// FSDP style: every tensor cut into `world` parts of equal size (the first `len % world`
    /// one entry longer).
    pub fn per_tensor(table: &TensorTable, world: usize, rank: usize) -> Result<Self> {
        let ranges: Vec<Vec<Range<usize>>> = (0..world)
            .map(|r| {
                table
                    .lengths()
                    .iter()
                    .map(|&len| {
                        let at = |r: usize| r * (len / world) + r.min(len % world);
                        at(r)..at(r + 1)
                    })
                    .collect()
            })
            .collect();
        Self::new(table, &ranges, rank)
    }

    /// One rank holding everything: the unsharded case.
    pub fn single(table: &TensorTable) -> Self {
        let all: Vec<Range<usize>> = table.lengths().iter().map(|&len| 0..len).collect();
        Self::new(table, &[all], 0).expect("one rank covers every tensor")
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn world(&self) -> usize {
        self.ranges.len()
    }

    /// Rank `rank`'s slice of tensor `tensor`, in tensor coordinates.
    pub fn range_of(&self, rank: usize, tensor: usize) -> Range<usize> {
        let (offset, len) = self.ranges[rank][tensor];
        offset..offset + len
    }

    /// This rank's slice of tensor `tensor`, in tensor coordinates.
    pub fn local_range(&self, tensor: usize) -> Range<usize> {
        self.range_of(self.rank, tensor)
    }

    /// The length of this rank's slice of each tensor: the lengths of the buffers it passes.
    pub fn local_lengths(&self) -> Vec<usize> {
        self.ranges[self.rank].iter().map(|&(_, len)| len).collect()
    }

    /// Whether this layout was checked against a table with these tensor lengths.
    pub fn fits(&self, table: &TensorTable) -> bool {
        self.lengths == table.lengths()
    }

    /// [`ShardLayout::fits`] as the error every sharded engine returns.
    pub(crate) fn check_table(&self, table: &TensorTable) -> Result<()> {
        if self.fits(table) {
            Ok(())
        } else {
            Err(Error::ShardLayout(
                "the layout was built for another table".into(),
            ))
        }
    }

    /// A fingerprint of every rank's ranges (not of which rank this is).
    pub fn fingerprint(&self) -> u64 {
        let mut h = splitmix(self.ranges.len() as u64);
        for mine in &self.ranges {
            for &(offset, len) in mine {
                h = splitmix(h ^ offset as u64);
                h = splitmix(h ^ len as u64);
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_must_cover_each_tensor_exactly_once() {
        let table = TensorTable::per_tensor(&[10, 0, 3]).unwrap();
        let ok = vec![vec![0..4, 0..0, 0..0], vec![4..10, 0..0, 0..3]];
        assert!(ShardLayout::new(&table, &ok, 1).is_ok());
        let cases: [(&str, Vec<Vec<Range<usize>>>); 5] = [
            (
                "overlap",
                vec![vec![0..5, 0..0, 0..0], vec![4..10, 0..0, 0..3]],
            ),
            ("gap", vec![vec![0..4, 0..0, 0..0], vec![5..10, 0..0, 0..3]]),
            (
                "short",
                vec![vec![0..4, 0..0, 0..0], vec![4..9, 0..0, 0..3]],
            ),
            (
                "past the end",
                vec![vec![0..4, 0..0, 0..0], vec![4..11, 0..0, 0..3]],
            ),
            (
                "twice",
                vec![vec![0..10, 0..0, 0..3], vec![0..10, 0..0, 0..0]],
            ),
        ];
        for (what, ranges) in cases {
            assert!(
                matches!(
                    ShardLayout::new(&table, &ranges, 0),
                    Err(Error::ShardLayout(_))
                ),
                "{what}"
            );
        }
        assert!(ShardLayout::new(&table, &ok, 2).is_err());
        assert!(ShardLayout::new(&table, &[], 0).is_err());
        assert!(ShardLayout::new(&table, &[vec![0..10, 0..0]], 0).is_err());
    }

    #[test]
    fn flat_and_per_tensor_layouts() {
        let table = TensorTable::per_tensor(&[5, 0, 6]).unwrap();
        let flat = ShardLayout::flat(&table, 3, 1).unwrap();
        assert_eq!(flat.range_of(0, 0), 0..4);
        assert_eq!(flat.range_of(1, 0), 4..5);
        assert_eq!(flat.range_of(1, 2), 0..3);
        assert_eq!(flat.range_of(2, 2), 3..6);
        assert_eq!(flat.local_lengths(), vec![1, 0, 3]);
        let per = ShardLayout::per_tensor(&table, 4, 3).unwrap();
        assert_eq!(per.local_lengths(), vec![1, 0, 1]);
        assert_eq!(per.range_of(0, 0), 0..2);
        assert_ne!(flat.fingerprint(), per.fingerprint());
        assert_eq!(ShardLayout::single(&table).local_lengths(), vec![5, 0, 6]);
    }
}
