//! `CpuSelector`: the exact per-group threshold on the CPU, the oracle for the CUDA backend.
//!
//! The steps mirror the GPU's (DESIGN.md §2):
//! 1. Pass 1, parallel over chunks: a private 12-bit first-digit histogram per chunk and the sum of
//!    g^2; non-finite counts come free from the top bins. With speculation, a group whose previous
//!    call chose first-digit bin b instead gets a *window* pass over bins b-1..=b+1: it counts the
//!    keys above the window and copies out the keys inside it, which vectorizes (`pass1.rs`).
//! 2. Per group: choose the bucket holding the target-th largest key, from the merged histogram, or
//!    from the count above the window plus a histogram of the copied keys. When the bucket lies in
//!    the window, the copied keys are the candidates; otherwise (a miss) the group's chunks are
//!    histogrammed after all (a second read) and it goes on as without speculation.
//! 3. Pass 2 (groups without candidates yet), parallel over chunks: copy the keys in their group's
//!    bucket into a compacted candidate buffer; each chunk's offset is known from its histogram.
//! 4. Per group: refine the remaining digits over its candidates, compacting them in place, with an
//!    early exit when the bucket holds exactly the remaining target. A group whose bucket did not fit
//!    the candidate buffer re-reads its gradients instead.
//!
//! Either way the first digit, the bucket and every later digit are those of the plain radix
//! select, so the result is the same bit for bit. All buffers are sized in `new`; `select`
//! allocates nothing.

use std::ops::Range;

use rayon::prelude::*;

use super::exact_sum::ExactSum;
use super::radix::{GroupState, Stage};
use super::sharded::Sharded;
use crate::config::{kept_target, validate_ratio};
use crate::select::{GroupStats, Selection};
use crate::shard::{ShardLayout, Shards};
use crate::table::{GroupMap, TensorTable};
use crate::tuning::{CPU_CHUNK_LEN, FIRST_DIGIT_BINS, FIRST_DIGIT_BITS};
use crate::work::{runs, whole_tensors};
use crate::{DType, GradElem, Result, Scope};

/// Groups smaller than this never speculate: a second read costs them less than the bookkeeping.
pub(super) const SPECULATE_MIN_LEN: u64 = 1 << 16;
/// First-digit bins on each side of the previous bucket that a window covers.
pub(super) const WINDOW_HALF_WIDTH: u32 = 1;
/// The same for a first call, whose window comes from a sample (a wider guess).
pub(super) const SAMPLED_HALF_WIDTH: u32 = 2;
/// The sample of a first call: `SAMPLE_RUNS` runs of `SAMPLE_RUN` consecutive entries.
const SAMPLE_RUNS: usize = 64;
const SAMPLE_RUN: usize = 64;

/// A run of at most `CPU_CHUNK_LEN` entries of one tensor (of this rank's slice of it).
#[derive(Debug, Clone, Copy)]
pub(super) struct Chunk {
    pub tensor: usize,
    pub group: usize,
    pub dense: bool,
    /// First entry in the (local) buffer, and count.
    pub start: usize,
    pub len: usize,
    /// The chunk's whole leaves of the sum of g^2, relative to `start` (all of it unsharded).
    pub whole_start: usize,
    pub whole_end: usize,
    /// This chunk's range of the window buffer (non-dense chunks of speculating groups, laid out
    /// in group order so that a group's ranges are contiguous).
    pub window_start: usize,
    pub window_cap: usize,
}

/// What pass 1 produced for one chunk.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ChunkCounts {
    /// The sums of g^2 of the chunk's whole leaves.
    pub sum: ExactSum,
    pub non_finite: u64,
    /// Window pass only: keys above the window, and keys copied out (None: overflow).
    pub above: u64,
    pub written: Option<usize>,
    /// Whether this chunk's histogram is valid for this call.
    pub histogram: bool,
}

/// The CPU selection engine for one table and scope. Build once, call `select` every step.
pub struct CpuSelector {
    pub(super) table: TensorTable,
    pub(super) map: GroupMap,
    pub(super) chunks: Vec<Chunk>,
    /// Non-dense chunk ids, grouped by selection group: group g owns
    /// `group_chunks[group_chunk_off[g]..group_chunk_off[g + 1]]`.
    pub(super) group_chunks: Vec<usize>,
    pub(super) group_chunk_off: Vec<usize>,
    pub(super) chunk_hist: Vec<u32>,
    pub(super) chunk_spare: Vec<u32>,
    pub(super) chunk_counts: Vec<ChunkCounts>,
    pub(super) chunk_cand_off: Vec<usize>,
    pub(super) states: Vec<GroupState>,
    /// Each group's window for this call: first-digit bins (lo, hi).
    pub(super) windows: Vec<Option<(u32, u32)>>,
    /// Groups whose window missed: pass 1 histograms them after all.
    pub(super) missed: Vec<bool>,
    /// Each group's first-digit bucket in the previous call, for the dtype in `previous_dtype`.
    pub(super) previous_bin: Vec<Option<u32>>,
    pub(super) previous_dtype: Option<DType>,
    pub(super) speculate: bool,
    pub(super) window_keys: Vec<u32>,
    pub(super) candidates: Vec<u32>,
    pub(super) selection: Selection,
    /// The ranks' collective and exchange buffers, for a sharded selector.
    pub(super) sharded: Option<Box<Sharded>>,
}

impl CpuSelector {
    /// Sizes every buffer for `table` under `scope`. The candidate buffer holds up to 1/16 of the
    /// entries (at least 64K); see [`CpuSelector::with_candidate_capacity`].
    pub fn new(table: &TensorTable, scope: Scope) -> Self {
        let capacity = (table.total_len() / 16).max(1 << 16) as usize;
        Self::with_candidate_capacity(table, scope, capacity)
    }

    /// Like `new`, with an explicit candidate buffer of `capacity` keys. A group whose bucket does
    /// not fit re-reads its gradients for each refinement digit (exact, slower).
    pub fn with_candidate_capacity(table: &TensorTable, scope: Scope, capacity: usize) -> Self {
        Self::build(table, scope, capacity, &whole_tensors(table))
    }

    /// A selector for one rank of a sharded model: `shards` says which slice of each tensor this
    /// rank holds and how the ranks all-reduce. Every rank builds one with the same table, scope
    /// and layout (checked with one all-reduce of a fingerprint: [`Error::ShardMismatch`]
    /// otherwise), then calls [`CpuSelector::select`] with its slices, in the same order as the
    /// others. Each gets the thresholds, kept counts, sums and non-finite counts of the whole
    /// tensors, bit for bit those of an unsharded selector.
    ///
    /// [`Error::ShardMismatch`]: crate::Error::ShardMismatch
    pub fn sharded(table: &TensorTable, scope: Scope, shards: Shards) -> Result<Self> {
        shards.check_table(table)?;
        let mut selector = Self::sharded_build(table, scope, &shards.layout);
        let mut sharded = Sharded::new(
            table,
            &selector.map,
            scope,
            shards.layout,
            Some(shards.collective),
        )?;
        sharded.dense_chunks = (0..selector.chunks.len())
            .filter(|&c| selector.chunks[c].dense)
            .collect();
        selector.sharded = Some(Box::new(sharded));
        Ok(selector)
    }

    /// A sharded selector without its collective (the optimizer lends its own per call).
    pub(crate) fn sharded_lent(table: &TensorTable, scope: Scope, layout: &ShardLayout) -> Self {
        let mut selector = Self::sharded_build(table, scope, layout);
        let mut sharded = Sharded::new(table, &selector.map, scope, layout.clone(), None)
            .expect("no collective: nothing to check");
        sharded.dense_chunks = (0..selector.chunks.len())
            .filter(|&c| selector.chunks[c].dense)
            .collect();
        selector.sharded = Some(Box::new(sharded));
        selector
    }

    /// The buffers of a sharded selector (speculation off).
    fn sharded_build(table: &TensorTable, scope: Scope, layout: &ShardLayout) -> Self {
        let local: Vec<Range<usize>> = (0..table.len()).map(|t| layout.local_range(t)).collect();
        let local_total: usize = local.iter().map(|r| r.len()).sum();
        let capacity = (local_total / 16).max(1 << 16);
        let mut selector = Self::build(table, scope, capacity, &local);
        selector.speculate = false;
        selector
    }

    /// Sizes every buffer for this rank's slices `local` of `table`'s tensors.
    fn build(table: &TensorTable, scope: Scope, capacity: usize, local: &[Range<usize>]) -> Self {
        let map = GroupMap::new(table, scope);
        let mut chunks: Vec<Chunk> = runs(table, local, CPU_CHUNK_LEN)
            .into_iter()
            .map(|run| Chunk {
                tensor: run.tensor,
                group: map.group_of[run.tensor] as usize,
                dense: table.dense()[run.tensor],
                start: run.start,
                len: run.len,
                whole_start: run.whole.start,
                whole_end: run.whole.end,
                window_start: 0,
                window_cap: 0,
            })
            .collect();
        let mut group_chunk_off = vec![0usize; map.n_groups() + 1];
        for chunk in chunks.iter().filter(|c| !c.dense) {
            group_chunk_off[chunk.group + 1] += 1;
        }
        for g in 0..map.n_groups() {
            group_chunk_off[g + 1] += group_chunk_off[g];
        }
        let mut cursor = group_chunk_off.clone();
        let mut group_chunks = vec![0usize; group_chunk_off[map.n_groups()]];
        for (id, chunk) in chunks.iter().enumerate().filter(|(_, c)| !c.dense) {
            group_chunks[cursor[chunk.group]] = id;
            cursor[chunk.group] += 1;
        }
        // A window holds up to 1/16 of its chunk (plus slack for one vector block); more is a miss.
        let mut window_total = 0;
        for &id in &group_chunks {
            let chunk = &mut chunks[id];
            if map.group_len[chunk.group] >= SPECULATE_MIN_LEN {
                chunk.window_start = window_total;
                chunk.window_cap = chunk.len / 16 + 64;
                window_total += chunk.window_cap;
            }
        }
        let n = chunks.len();
        CpuSelector {
            table: table.clone(),
            chunks,
            group_chunks,
            group_chunk_off,
            chunk_hist: vec![0; n * FIRST_DIGIT_BINS],
            chunk_spare: vec![0; n * FIRST_DIGIT_BINS],
            chunk_counts: vec![ChunkCounts::default(); n],
            chunk_cand_off: vec![usize::MAX; n],
            states: vec![GroupState::default(); map.n_groups()],
            windows: vec![None; map.n_groups()],
            missed: vec![false; map.n_groups()],
            previous_bin: vec![None; map.n_groups()],
            previous_dtype: None,
            speculate: true,
            window_keys: vec![0; window_total],
            // Each chunk's range gets COMPACT_SLACK more: pass 2's vector stores overrun by up to a vector.
            candidates: vec![0; capacity + n * super::passes::COMPACT_SLACK],
            selection: Selection {
                dtype: DType::F32,
                groups: vec![GroupStats::default(); map.n_groups()],
                group_of: map.group_of.clone(),
                non_finite: 0,
                sum_sq: 0.0,
            },
            sharded: None,
            map,
        }
    }

    /// Turns speculation (one read of g when a group's bucket stays within a bin of the previous
    /// call's) on or off. On by default; results are identical either way.
    pub fn set_speculation(&mut self, on: bool) {
        self.speculate = on;
    }

    /// Forgets the previous call's buckets: the next call speculates from a sample of the
    /// gradients, as a first call does (for benchmarks of a first step, or after a jump).
    pub fn forget_previous_buckets(&mut self) {
        self.previous_bin.fill(None);
    }

    /// Groups of the last call whose bucket fell inside their window, so pass 1 was the only read.
    pub fn window_hits(&self) -> usize {
        self.states.iter().filter(|s| s.in_window).count()
    }

    /// The table this selector was built for.
    pub fn table(&self) -> &TensorTable {
        &self.table
    }

    /// Number of selection groups.
    pub fn n_groups(&self) -> usize {
        self.map.n_groups()
    }

    /// The most recent selection.
    pub fn last(&self) -> &Selection {
        &self.selection
    }

    /// Computes every group's exact threshold and kept count for `grads` (one slice per tensor, in
    /// table order) at `mask_ratio`. Rejects a ratio outside [0, 1] or NaN and buffers whose lengths
    /// differ from the table; a rejected call leaves the previous selection untouched.
    ///
    /// A sharded selector takes this rank's slices (the layout's local lengths) and communicates:
    /// one all-reduce for pass 1 (every rank's call header, the sums of g^2, the non-finite counts,
    /// the entries of leaves cut by shard boundaries, and every group's first-digit histogram),
    /// then one per refinement digit (f32: 2, bf16/f16: 1) while a group still refines. Ranks
    /// that disagree on the ratio or the dtype, or a failed collective, give an error on every
    /// rank ([`Error::ShardMismatch`], [`Error::Collective`]); the previous selection stays.
    ///
    /// [`Error::ShardMismatch`]: crate::Error::ShardMismatch
    /// [`Error::Collective`]: crate::Error::Collective
    pub fn select<T: GradElem>(&mut self, grads: &[&[T]], mask_ratio: f64) -> Result<&Selection> {
        validate_ratio(mask_ratio)?;
        if self.sharded.is_some() {
            return self.select_sharded(grads, mask_ratio);
        }
        self.table
            .check_lengths("gradients", grads.iter().map(|g| g.len()))?;
        let shift = T::DTYPE.key_bits() - FIRST_DIGIT_BITS;
        self.plan_windows(grads, mask_ratio, shift);
        self.first_pass(grads, shift, false);
        self.choose_first_buckets(mask_ratio, shift, false);
        if self.missed.iter().any(|&m| m) {
            self.first_pass(grads, shift, true);
            self.choose_first_buckets(mask_ratio, shift, true);
        }
        self.assign_candidates();
        self.compact_candidates(grads);
        self.refine(grads);

        self.selection.dtype = T::DTYPE;
        let mut total = ExactSum::default();
        self.chunk_counts.iter().for_each(|c| total.merge(&c.sum));
        self.selection.sum_sq = total.to_f64();
        self.selection.non_finite = self.chunk_counts.iter().map(|c| c.non_finite).sum();
        for (state, stats) in self.states.iter().zip(&mut self.selection.groups) {
            debug_assert_eq!(state.stage, Stage::Done);
            stats.threshold_key = state.threshold_key;
            stats.kept = state.kept;
        }
        self.selection.finish_thresholds();
        Ok(&self.selection)
    }

    /// Each group's window for this call, from its previous bucket of the same dtype.
    fn plan_windows<T: GradElem>(&mut self, grads: &[&[T]], mask_ratio: f64, shift: u32) {
        if self.previous_dtype != Some(T::DTYPE) {
            self.previous_bin.fill(None);
            self.previous_dtype = Some(T::DTYPE);
        }
        self.missed.fill(false);
        let mut windows = std::mem::take(&mut self.windows); // no allocation: moved out and back
        let this = &*self;
        windows.par_iter_mut().enumerate().for_each(|(g, window)| {
            let len = this.map.group_len[g];
            let target = kept_target(len, mask_ratio);
            *window = None;
            if !this.speculate || len < SPECULATE_MIN_LEN || mask_ratio == 0.0 || target == 0 {
                return;
            }
            let (bin, half_width) = match this.previous_bin[g] {
                Some(bin) => (bin, WINDOW_HALF_WIDTH),
                None => (
                    this.sampled_bin(grads, g, target, shift),
                    SAMPLED_HALF_WIDTH,
                ),
            };
            let top = FIRST_DIGIT_BINS as u32 - 1;
            *window = Some((bin.saturating_sub(half_width), (bin + half_width).min(top)));
        });
        self.windows = windows;
    }

    /// The first-digit bin of the target-th largest key of a sample of group `g`: runs of
    /// `SAMPLE_RUN` entries at `SAMPLE_RUNS` evenly spaced places (a few cache lines each).
    fn sampled_bin<T: GradElem>(&self, grads: &[&[T]], g: usize, target: u64, shift: u32) -> u32 {
        let mine = &self.group_chunks[self.group_chunk_off[g]..self.group_chunk_off[g + 1]];
        let len = self.map.group_len[g];
        let mut keys = [0u32; SAMPLE_RUNS * SAMPLE_RUN];
        let mut n = 0;
        let (mut chunk_at, mut chunk_first) = (0usize, 0u64);
        for run in 0..SAMPLE_RUNS as u64 {
            let position = run * len / SAMPLE_RUNS as u64;
            while chunk_first + self.chunks[mine[chunk_at]].len as u64 <= position {
                chunk_first += self.chunks[mine[chunk_at]].len as u64;
                chunk_at += 1;
            }
            let chunk = self.chunks[mine[chunk_at]];
            let data = &grads[chunk.tensor][chunk.start..][..chunk.len];
            let from = (position - chunk_first) as usize;
            for x in &data[from..(from + SAMPLE_RUN).min(data.len())] {
                keys[n] = x.key();
                n += 1;
            }
        }
        let from_top = ((target as f64 / len as f64) * n as f64)
            .ceil()
            .clamp(1.0, n as f64) as usize;
        let (_, key, _) = keys[..n].select_nth_unstable(n - from_top);
        *key >> shift
    }
}
