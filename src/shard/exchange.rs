//! What the ranks exchange once per step, before any bucket is chosen: each rank's call header
//! (checked equal), every group's exact sum of g^2 and non-finite count, and the entries of the
//! leaves that shard boundaries cut. One u64 all-reduce.
//!
//! Buffer layout (words): `HEADER_WORDS` per rank (each rank writes only its own), then per group
//! `SUM_WORDS + 1` (exact sum, non-finite count) and `extra` more, then the same for the dense
//! tensors (the step totals count them), then the cut leaves' entries as f32 bits, two per word.
//! A word written by one rank only is carried whole by the sum; sums and counts add.

use rayon::prelude::*;

use super::ShardLayout;
use crate::cpu::exact_sum::{ExactSum, SUM_WORDS};
use crate::cpu::leaf_sum;
use crate::tuning::SUM_LEAF_LEN;
use crate::work::whole_leaves;
use crate::{Error, GradElem, GroupMap, Result, TensorTable};

/// Words of each rank's call header.
pub(crate) const HEADER_WORDS: usize = 4;

/// A leaf of the sum of g^2 that a shard boundary cuts.
#[derive(Debug, Clone, Copy)]
struct CutLeaf {
    tensor: usize,
    /// Its first entry, in tensor coordinates, and its length.
    start: usize,
    len: usize,
    /// Its first value slot.
    slot: usize,
}

/// The per-step exchange of a sharded selector or optimizer: sized once.
pub(crate) struct StatsExchange {
    world: usize,
    rank: usize,
    extra: usize,
    n_groups: usize,
    group_of: Vec<usize>,
    dense: Vec<bool>,
    cut: Vec<CutLeaf>,
    slot_words: usize,
    /// The all-reduce buffer.
    pub words: Vec<u64>,
    /// After `finish`: each group's exact sum, then the dense tensors'.
    pub sums: Vec<ExactSum>,
    values: Vec<f32>,
}

impl StatsExchange {
    /// The exchange for `table` under `map` and `layout`, with `extra` more words per group.
    pub fn new(table: &TensorTable, map: &GroupMap, layout: &ShardLayout, extra: usize) -> Self {
        let mut cut: Vec<CutLeaf> = Vec::new();
        for (t, &n) in table.lengths().iter().enumerate() {
            let mut leaves: Vec<usize> = Vec::new();
            for r in 0..layout.world() {
                let range = layout.range_of(r, t);
                let whole = whole_leaves(range.start, range.end, n);
                for piece in [range.start..whole.start, whole.end..range.end] {
                    if !piece.is_empty() {
                        leaves.extend(piece.start / SUM_LEAF_LEN..=(piece.end - 1) / SUM_LEAF_LEN);
                    }
                }
            }
            leaves.sort_unstable();
            leaves.dedup();
            for leaf in leaves {
                let start = leaf * SUM_LEAF_LEN;
                let slot = cut.last().map_or(0, |c| c.slot + c.len);
                cut.push(CutLeaf {
                    tensor: t,
                    start,
                    len: SUM_LEAF_LEN.min(n - start),
                    slot,
                });
            }
        }
        let slots = cut.last().map_or(0, |c| c.slot + c.len);
        let (n_groups, world) = (map.n_groups(), layout.world());
        let words = HEADER_WORDS * world + (n_groups + 1) * (SUM_WORDS + 1 + extra);
        StatsExchange {
            world,
            rank: layout.rank(),
            extra,
            n_groups,
            group_of: map.group_of.iter().map(|&g| g as usize).collect(),
            dense: table.dense().to_vec(),
            cut,
            slot_words: slots.div_ceil(2),
            words: vec![0; words + slots.div_ceil(2)],
            sums: vec![ExactSum::default(); n_groups + 1],
            values: vec![0.0; SUM_LEAF_LEN],
        }
    }

    /// Words of one group's (or the dense tensors') record.
    fn record(&self) -> usize {
        SUM_WORDS + 1 + self.extra
    }

    fn record_at(&self, group: usize) -> usize {
        HEADER_WORDS * self.world + group * self.record()
    }

    /// Clears the buffer and writes this rank's header.
    pub fn begin(&mut self, header: [u64; HEADER_WORDS]) {
        self.words.fill(0);
        let at = HEADER_WORDS * self.rank;
        self.words[at..at + HEADER_WORDS].copy_from_slice(&header);
    }

    /// Writes every group's record, then the dense tensors', in parallel: the exact sum and
    /// non-finite count of this rank's chunks of it (`group_chunks[offs[g]..offs[g + 1]]`, or
    /// `dense_chunks`), added from `stats(chunk)`; then, for a group, `extra(g, chunks, words)`
    /// writes its extra words.
    pub fn fill_records(
        &mut self,
        (group_chunks, offs, dense_chunks): (&[usize], &[usize], &[usize]),
        stats: impl Fn(usize) -> (ExactSum, u64) + Sync,
        extra: impl Fn(usize, &[usize], &mut [u64]) + Sync,
    ) {
        let (at, len) = (self.record_at(0), (self.n_groups + 1) * self.record());
        let (n_groups, record_len) = (self.n_groups, self.record());
        self.words[at..at + len]
            .par_chunks_mut(record_len)
            .enumerate()
            .for_each(|(g, record)| {
                let mine = if g < n_groups {
                    &group_chunks[offs[g]..offs[g + 1]]
                } else {
                    dense_chunks // the dense tensors' record is the last
                };
                let (mut sum, mut non_finite) = (ExactSum::default(), 0);
                for &c in mine {
                    let (s, n) = stats(c);
                    sum.merge(&s);
                    non_finite += n;
                }
                sum.write_words(&mut record[..SUM_WORDS]);
                record[SUM_WORDS] = non_finite;
                if g < n_groups {
                    extra(g, mine, &mut record[SUM_WORDS + 1..]);
                }
            });
    }

    /// The reduced extra words of group `group`.
    pub fn extra(&self, group: usize) -> &[u64] {
        let at = self.record_at(group) + SUM_WORDS + 1;
        &self.words[at..at + self.extra]
    }

    /// Writes the entries of one of this rank's chunks of tensor `tensor` (`data`, whose first
    /// entry is `first` in tensor coordinates) outside its whole leaves (`whole`, relative to
    /// `data`): those lie in cut leaves.
    pub fn put_chunk_cuts<T: GradElem>(
        &mut self,
        tensor: usize,
        first: usize,
        data: &[T],
        whole: std::ops::Range<usize>,
    ) {
        self.put_cut_values(tensor, first, &data[..whole.start]);
        self.put_cut_values(tensor, first + whole.end, &data[whole.end..]);
    }

    /// Writes the entries `values` of tensor `tensor` that start at `start` (tensor coordinates)
    /// and lie in cut leaves.
    fn put_cut_values<T: GradElem>(&mut self, tensor: usize, start: usize, values: &[T]) {
        let base = self.words.len() - self.slot_words;
        for (i, x) in values.iter().enumerate() {
            let position = start + i;
            let key = (tensor, position / SUM_LEAF_LEN * SUM_LEAF_LEN);
            let leaf = self.cut.partition_point(|c| (c.tensor, c.start) < key);
            let leaf = &self.cut[leaf];
            debug_assert_eq!(
                (leaf.tensor, leaf.start),
                key,
                "cut pieces lie in cut leaves"
            );
            let slot = leaf.slot + position - leaf.start;
            self.words[base + slot / 2] |= u64::from(x.to_f32().to_bits()) << (32 * (slot % 2));
        }
    }

    /// After the all-reduce: checks that every rank sent the same header (`names` says what each
    /// word is), then puts each group's exact sum, the cut leaves included, in `sums`.
    pub fn finish(&mut self, names: [&'static str; HEADER_WORDS]) -> Result<()> {
        let headers = &self.words[..HEADER_WORDS * self.world];
        for (i, name) in names.iter().enumerate() {
            if headers.chunks(HEADER_WORDS).any(|h| h[i] != headers[i]) {
                return Err(Error::ShardMismatch { what: name });
            }
        }
        for g in 0..=self.n_groups {
            let at = self.record_at(g);
            self.sums[g] = ExactSum::from_words(&self.words[at..at + SUM_WORDS]);
        }
        let base = self.words.len() - self.slot_words;
        for leaf in &self.cut {
            for (i, value) in self.values[..leaf.len].iter_mut().enumerate() {
                let slot = leaf.slot + i;
                *value = f32::from_bits((self.words[base + slot / 2] >> (32 * (slot % 2))) as u32);
            }
            let group = if self.dense[leaf.tensor] {
                self.n_groups
            } else {
                self.group_of[leaf.tensor]
            };
            let mut one = ExactSum::default();
            one.add(leaf_sum(&self.values[..leaf.len]));
            self.sums[group].merge(&one);
        }
        Ok(())
    }

    /// The reduced non-finite count of group `group` (`n_groups`: the dense tensors).
    pub fn non_finite(&self, group: usize) -> u64 {
        self.words[self.record_at(group) + SUM_WORDS]
    }

    /// The reduced non-finite count over every tensor.
    pub fn total_non_finite(&self) -> u64 {
        (0..=self.n_groups).map(|g| self.non_finite(g)).sum()
    }

    /// The exact sum over every tensor, dense ones included.
    pub fn total(&self) -> ExactSum {
        let mut total = ExactSum::default();
        self.sums.iter().for_each(|s| total.merge(s));
        total
    }
}

/// Checks at construction that every rank built the same object: each rank puts `fingerprint`
/// in its own word, and all must agree. One all-reduce of `world` words.
pub(crate) fn check_fingerprint(
    collective: &mut dyn super::Collective,
    fingerprint: u64,
    what: &'static str,
) -> Result<()> {
    let mut words = vec![0u64; collective.world()];
    words[collective.rank()] = fingerprint;
    collective.all_reduce_u64(&mut words)?;
    if words.iter().any(|&w| w != fingerprint) {
        return Err(Error::ShardMismatch { what });
    }
    Ok(())
}
