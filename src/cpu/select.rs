//! `CpuSelector`: the exact per-group threshold on the CPU, the oracle for the CUDA backend.
//!
//! The steps mirror the GPU's (DESIGN.md §2):
//! 1. Pass 1, parallel over chunks: a private 12-bit first-digit histogram per chunk and the sum of
//!    g^2. Non-finite counts come free from the top bins of that histogram. With speculation, each
//!    chunk also copies out the keys whose first digit lies within 2 bins of the bucket its group
//!    chose in the previous call (a "window").
//! 2. Per group: merge its chunks' histograms and choose the bucket holding the target-th largest
//!    key. When the bucket is inside the window, the copied keys are the candidates: done reading g.
//! 3. Pass 2 (groups without a window hit), parallel over chunks: copy the keys that fall in their
//!    group's bucket into a compacted candidate buffer. Each chunk's write offset is known exactly
//!    from its own histogram.
//! 4. Per group: refine the remaining digits over its candidates, compacting them in place, with an
//!    early exit when the bucket holds exactly the remaining target. A group whose bucket did not fit
//!    the candidate buffer re-reads its gradients instead.
//!
//! All buffers are sized in `new`; `select` allocates nothing.

use rayon::prelude::*;

use super::radix::{first_digit_histogram, GroupState, Stage, Window};
use super::shared::SharedSlice;
use crate::config::{kept_target, validate_ratio};
use crate::select::{GroupStats, Selection, KEEP_NONE};
use crate::table::{GroupMap, TensorTable};
use crate::tuning::{CPU_CHUNK_LEN, FIRST_DIGIT_BINS, FIRST_DIGIT_BITS, REFINE_DIGIT_BITS};
use crate::{DType, GradElem, Result, Scope};

/// Groups smaller than this never speculate: their second read costs less than the window.
const SPECULATE_MIN_LEN: u64 = 1 << 16;
/// Bins on each side of last call's bucket that the window covers (a bin is 1/16 octave for f32).
const WINDOW_HALF_WIDTH: u32 = 2;

/// A run of at most `CPU_CHUNK_LEN` entries of one tensor.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    tensor: usize,
    group: usize,
    dense: bool,
    start: usize,
    len: usize,
    /// This chunk's range of the window buffer (non-dense chunks, laid out in group order).
    window_start: usize,
    window_cap: usize,
}

/// The CPU selection engine for one table and scope. Build once, call `select` every step.
pub struct CpuSelector {
    table: TensorTable,
    map: GroupMap,
    chunks: Vec<Chunk>,
    /// Non-dense chunk ids, grouped by selection group; group g owns `group_chunks[group_chunk_off[g]..group_chunk_off[g+1]]`.
    group_chunks: Vec<usize>,
    group_chunk_off: Vec<usize>,
    chunk_hist: Vec<u32>,
    chunk_spare: Vec<u32>,
    chunk_sum_sq: Vec<f64>,
    chunk_cand_off: Vec<usize>,
    /// Keys copied out by each chunk in pass 1 (None: no window, or it overflowed).
    chunk_window_len: Vec<Option<usize>>,
    states: Vec<GroupState>,
    /// Each group's window for this call: (lowest bin, span).
    windows: Vec<Option<(u32, u32)>>,
    /// Each group's first-digit bucket in the previous call, for the dtype in `previous_dtype`.
    previous_bin: Vec<Option<u32>>,
    previous_dtype: Option<DType>,
    speculate: bool,
    window_keys: Vec<u32>,
    candidates: Vec<u32>,
    selection: Selection,
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
        let map = GroupMap::new(table, scope);
        let mut chunks = Vec::new();
        for (tensor, &len) in table.lengths().iter().enumerate() {
            let (group, dense) = (map.group_of[tensor] as usize, table.dense()[tensor]);
            for start in (0..len).step_by(CPU_CHUNK_LEN) {
                let len = CPU_CHUNK_LEN.min(len - start);
                chunks.push(Chunk {
                    tensor,
                    group,
                    dense,
                    start,
                    len,
                    window_start: 0,
                    window_cap: 0,
                });
            }
        }
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
        // A window holds up to 1/8 of its chunk (plus one block of slack); more means a miss.
        let mut window_total = 0;
        for &id in &group_chunks {
            let chunk = &mut chunks[id];
            if map.group_len[chunk.group] >= SPECULATE_MIN_LEN {
                chunk.window_start = window_total;
                chunk.window_cap = chunk.len / 8 + 512;
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
            chunk_sum_sq: vec![0.0; n],
            chunk_cand_off: vec![usize::MAX; n],
            chunk_window_len: vec![None; n],
            states: vec![GroupState::default(); map.n_groups()],
            windows: vec![None; map.n_groups()],
            previous_bin: vec![None; map.n_groups()],
            previous_dtype: None,
            speculate: true,
            window_keys: vec![0; window_total],
            candidates: vec![0; capacity],
            selection: Selection {
                dtype: DType::F32,
                groups: vec![GroupStats::default(); map.n_groups()],
                group_of: map.group_of.clone(),
                non_finite: 0,
                sum_sq: 0.0,
            },
            map,
        }
    }

    /// Turns speculation (one read of g when a group's bucket stays within 2 bins of the previous
    /// call's) on or off. On by default; results are identical either way.
    pub fn set_speculation(&mut self, on: bool) {
        self.speculate = on;
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
    pub fn select<T: GradElem>(&mut self, grads: &[&[T]], mask_ratio: f64) -> Result<&Selection> {
        validate_ratio(mask_ratio)?;
        self.table
            .check_lengths("gradients", grads.iter().map(|g| g.len()))?;
        let shift = T::DTYPE.key_bits() - FIRST_DIGIT_BITS;
        self.plan_windows(T::DTYPE);
        self.first_pass(grads, shift);
        self.choose_first_buckets(
            mask_ratio,
            shift,
            (T::DTYPE.non_finite_key() >> shift) as usize,
        );
        self.assign_candidates();
        self.compact_candidates(grads);
        self.refine(grads);

        self.selection.dtype = T::DTYPE;
        for (state, stats) in self.states.iter().zip(&mut self.selection.groups) {
            debug_assert_eq!(state.stage, Stage::Done);
            stats.threshold_key = state.threshold_key;
            stats.kept = state.kept;
        }
        self.selection.finish_thresholds();
        Ok(&self.selection)
    }

    /// Each group's window for this call, from its previous bucket of the same dtype.
    fn plan_windows(&mut self, dtype: DType) {
        if self.previous_dtype != Some(dtype) {
            self.previous_bin.fill(None);
            self.previous_dtype = Some(dtype);
        }
        for (g, window) in self.windows.iter_mut().enumerate() {
            *window = match self.previous_bin[g] {
                Some(bin) if self.speculate && self.map.group_len[g] >= SPECULATE_MIN_LEN => {
                    let lo = bin.saturating_sub(WINDOW_HALF_WIDTH);
                    Some((lo, bin + WINDOW_HALF_WIDTH - lo))
                }
                _ => None,
            };
        }
    }

    /// Pass 1: private histograms, sums of squares and window copies per chunk; then step totals.
    fn first_pass<T: GradElem>(&mut self, grads: &[&[T]], shift: u32) {
        let (chunks, windows) = (&self.chunks, &self.windows);
        let window_keys = SharedSlice::new(&mut self.window_keys);
        self.chunk_hist
            .par_chunks_mut(FIRST_DIGIT_BINS)
            .zip(self.chunk_spare.par_chunks_mut(FIRST_DIGIT_BINS))
            .zip(
                self.chunk_sum_sq
                    .par_iter_mut()
                    .zip(self.chunk_window_len.par_iter_mut()),
            )
            .enumerate()
            .for_each(|(id, ((hist, spare), (sum_sq, window_len)))| {
                let chunk = chunks[id];
                let window = windows[chunk.group]
                    .filter(|_| !chunk.dense)
                    .map(|(lo, span)| Window {
                        lo,
                        span,
                        // SAFETY: chunks own disjoint ranges of the window buffer (laid out in `new`),
                        // and each chunk is handled by exactly one task.
                        out: unsafe { window_keys.slice_mut(chunk.window_start, chunk.window_cap) },
                    });
                hist.fill(0);
                let data = &grads[chunk.tensor][chunk.start..][..chunk.len];
                (*sum_sq, *window_len) = first_digit_histogram(data, shift, hist, spare, window);
            });
    }

    /// Per group: merge the chunk histograms, fill the stats, choose the first bucket, and take
    /// the window's keys as candidates when the bucket fell inside it.
    fn choose_first_buckets(&mut self, mask_ratio: f64, shift: u32, non_finite_bin: usize) {
        // Step totals, dense tensors included.
        self.selection.sum_sq = self.chunk_sum_sq.iter().sum();
        self.selection.non_finite = self
            .chunk_hist
            .chunks(FIRST_DIGIT_BINS)
            .map(|hist| {
                hist[non_finite_bin..]
                    .iter()
                    .map(|&c| u64::from(c))
                    .sum::<u64>()
            })
            .sum();

        let (hists, sums, chunks) = (&self.chunk_hist, &self.chunk_sum_sq, &self.chunks);
        let (group_chunks, offs, lens) = (
            &self.group_chunks,
            &self.group_chunk_off,
            &self.map.group_len,
        );
        let (windows, window_lens) = (&self.windows, &self.chunk_window_len);
        let window_keys = SharedSlice::new(&mut self.window_keys);
        self.states
            .par_iter_mut()
            .zip(self.selection.groups.par_iter_mut())
            .zip(self.previous_bin.par_iter_mut())
            .enumerate()
            .for_each(|(g, ((state, stats), previous))| {
                let mine = &group_chunks[offs[g]..offs[g + 1]];
                let mut merged = [0u64; FIRST_DIGIT_BINS];
                for &c in mine {
                    for (m, &h) in merged
                        .iter_mut()
                        .zip(&hists[c * FIRST_DIGIT_BINS..][..FIRST_DIGIT_BINS])
                    {
                        *m += u64::from(h);
                    }
                }
                let target = kept_target(lens[g], mask_ratio);
                *stats = GroupStats {
                    len: lens[g],
                    target,
                    sum_sq: mine.iter().map(|&c| sums[c]).sum(),
                    non_finite: merged[non_finite_bin..].iter().sum(),
                    ..GroupStats::default()
                };
                *state = GroupState {
                    target,
                    shift: shift + FIRST_DIGIT_BITS,
                    ..GroupState::default()
                };
                if target == 0 {
                    state.finish(KEEP_NONE, 0);
                    return;
                }
                if mask_ratio == 0.0 {
                    state.finish(0, lens[g]);
                    return;
                }
                state.descend(&merged, shift);
                *previous = Some(state.prefix);
                let hit = windows[g]
                    .is_some_and(|(lo, span)| state.prefix.wrapping_sub(lo) <= span)
                    && mine.iter().all(|&c| window_lens[c].is_some());
                if state.stage != Stage::Done && hit {
                    // Compact the group's window ranges (contiguous, in group order) in place.
                    let first = chunks[mine[0]].window_start;
                    let last = &chunks[mine[mine.len() - 1]];
                    // SAFETY: the group's chunks own [first, last.window_start + last.window_cap) of
                    // the window buffer, and each group is handled by exactly one task.
                    let keys = unsafe {
                        window_keys.slice_mut(first, last.window_start + last.window_cap - first)
                    };
                    let mut len = 0;
                    for &c in mine {
                        let (start, n) =
                            (chunks[c].window_start - first, window_lens[c].unwrap_or(0));
                        keys.copy_within(start..start + n, len);
                        len += n;
                    }
                    state.cand_start = first;
                    state.cand_len = len;
                    state.has_candidates = true;
                    state.in_window = true;
                }
            });
    }

    /// Gives each unfinished group without candidates whose bucket fits a range of the candidate
    /// buffer, and each of its chunks the exact offset where its bucket's keys go.
    fn assign_candidates(&mut self) {
        let mut cursor = 0usize;
        self.chunk_cand_off.fill(usize::MAX);
        for (g, state) in self.states.iter_mut().enumerate() {
            if state.stage == Stage::Done || state.in_window {
                continue;
            }
            state.has_candidates = cursor + state.bucket as usize <= self.candidates.len();
            if !state.has_candidates {
                continue;
            }
            state.cand_start = cursor;
            state.cand_len = state.bucket as usize;
            for &c in &self.group_chunks[self.group_chunk_off[g]..self.group_chunk_off[g + 1]] {
                self.chunk_cand_off[c] = cursor;
                cursor += self.chunk_hist[c * FIRST_DIGIT_BINS + state.prefix as usize] as usize;
            }
        }
    }

    /// Pass 2: each chunk copies the keys in its group's bucket to its range of the candidates.
    fn compact_candidates<T: GradElem>(&mut self, grads: &[&[T]]) {
        let (chunks, states, offsets, hists) = (
            &self.chunks,
            &self.states,
            &self.chunk_cand_off,
            &self.chunk_hist,
        );
        let out = SharedSlice::new(&mut self.candidates);
        (0..chunks.len())
            .into_par_iter()
            .filter(|&c| offsets[c] != usize::MAX)
            .for_each(|c| {
                let chunk = chunks[c];
                let state = &states[chunk.group];
                let count = hists[c * FIRST_DIGIT_BINS + state.prefix as usize] as usize;
                // SAFETY: `assign_candidates` gave this chunk [offset, offset + count), where count is
                // its own histogram's bucket count; the ranges of all chunks are disjoint.
                let keys = unsafe { out.slice_mut(offsets[c], count) };
                let mut n = 0;
                for &x in &grads[chunk.tensor][chunk.start..][..chunk.len] {
                    let key = x.key();
                    if state.in_bucket(key) {
                        keys[n] = key;
                        n += 1;
                    }
                }
            });
    }

    /// Runs the remaining digits of every unfinished group.
    fn refine<T: GradElem>(&mut self, grads: &[&[T]]) {
        let candidates = SharedSlice::new(&mut self.candidates);
        let window_keys = SharedSlice::new(&mut self.window_keys);
        let (chunks, group_chunks, offs) =
            (&self.chunks, &self.group_chunks, &self.group_chunk_off);
        self.states
            .par_iter_mut()
            .enumerate()
            .filter(|(_, s)| s.stage != Stage::Done)
            .for_each(|(g, state)| {
                let mut hist = [0u32; 1 << REFINE_DIGIT_BITS];
                if state.has_candidates {
                    let buffer = if state.in_window {
                        window_keys
                    } else {
                        candidates
                    };
                    // SAFETY: groups own disjoint ranges of both buffers, and each group is refined by
                    // exactly one task.
                    let keys = unsafe { buffer.slice_mut(state.cand_start, state.cand_len) };
                    state.refine_slice(keys, &mut hist);
                } else {
                    let mine = &group_chunks[offs[g]..offs[g + 1]];
                    state.refine_stream(
                        |f| {
                            for &c in mine {
                                let chunk = chunks[c];
                                grads[chunk.tensor][chunk.start..][..chunk.len]
                                    .iter()
                                    .for_each(|x| f(x.key()));
                            }
                        },
                        &mut hist,
                    );
                }
            });
    }
}
