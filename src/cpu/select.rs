//! `CpuSelector`: the exact per-group threshold on the CPU, the oracle for the CUDA backend.
//!
//! The steps mirror the GPU's (DESIGN.md §2):
//! 1. Pass 1, parallel over chunks: a private 12-bit first-digit histogram per chunk and the sum of
//!    g^2. Non-finite counts come free from the top bins of that histogram.
//! 2. Per group: merge its chunks' histograms and choose the bucket holding the target-th largest key.
//! 3. Pass 2, parallel over chunks: copy the keys that fall in their group's bucket into a compacted
//!    candidate buffer. Each chunk's write offset is known exactly from its own histogram.
//! 4. Per group: refine the remaining digits over its candidates, compacting them in place, with an
//!    early exit when the bucket holds exactly the remaining target. A group whose bucket did not fit
//!    the candidate buffer re-reads its gradients instead.
//!
//! All buffers are sized in `new`; `select` allocates nothing.

use rayon::prelude::*;

use super::radix::{first_digit_histogram, GroupState, Stage};
use crate::config::{kept_target, validate_ratio};
use crate::select::{GroupStats, Selection, KEEP_NONE};
use crate::table::{GroupMap, TensorTable};
use crate::tuning::{CPU_CHUNK_LEN, FIRST_DIGIT_BINS, FIRST_DIGIT_BITS, REFINE_DIGIT_BITS};
use crate::{DType, GradElem, Result, Scope};

/// A run of at most `CPU_CHUNK_LEN` entries of one tensor.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    tensor: usize,
    group: usize,
    dense: bool,
    start: usize,
    len: usize,
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
    states: Vec<GroupState>,
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
                chunks.push(Chunk {
                    tensor,
                    group,
                    dense,
                    start,
                    len: CPU_CHUNK_LEN.min(len - start),
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
            states: vec![GroupState::default(); map.n_groups()],
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
        let non_finite_bin = (T::DTYPE.non_finite_key() >> shift) as usize;

        // Pass 1: private histograms and sums of squares per chunk.
        let chunks = &self.chunks;
        self.chunk_hist
            .par_chunks_mut(FIRST_DIGIT_BINS)
            .zip(self.chunk_spare.par_chunks_mut(FIRST_DIGIT_BINS))
            .zip(self.chunk_sum_sq.par_iter_mut())
            .enumerate()
            .for_each(|(id, ((hist, spare), sum_sq))| {
                let chunk = chunks[id];
                hist.fill(0);
                *sum_sq = first_digit_histogram(
                    &grads[chunk.tensor][chunk.start..][..chunk.len],
                    shift,
                    hist,
                    spare,
                );
            });

        // Step totals, dense tensors included.
        self.selection.dtype = T::DTYPE;
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

        // Per group: merge, stats, first bucket.
        let (hists, sums) = (&self.chunk_hist, &self.chunk_sum_sq);
        let (group_chunks, offs, lens) = (
            &self.group_chunks,
            &self.group_chunk_off,
            &self.map.group_len,
        );
        self.states
            .par_iter_mut()
            .zip(self.selection.groups.par_iter_mut())
            .enumerate()
            .for_each(|(g, (state, stats))| {
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
                } else if mask_ratio == 0.0 {
                    state.finish(0, lens[g]);
                } else {
                    state.descend(&merged, shift);
                }
            });

        self.assign_candidates();
        self.compact_candidates(grads);
        self.refine(grads);

        for (state, stats) in self.states.iter().zip(&mut self.selection.groups) {
            debug_assert_eq!(state.stage, Stage::Done);
            stats.threshold_key = state.threshold_key;
            stats.kept = state.kept;
        }
        self.selection.finish_thresholds();
        Ok(&self.selection)
    }

    /// Gives each unfinished group whose bucket fits a range of the candidate buffer, and each of its
    /// chunks the exact offset where its bucket's keys go.
    fn assign_candidates(&mut self) {
        let mut cursor = 0usize;
        self.chunk_cand_off.fill(usize::MAX);
        for (g, state) in self.states.iter_mut().enumerate() {
            state.has_candidates = state.stage != Stage::Done
                && cursor + state.bucket as usize <= self.candidates.len();
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
        let out = SharedSlice(self.candidates.as_mut_ptr(), self.candidates.len());
        let (chunks, states, offsets) = (&self.chunks, &self.states, &self.chunk_cand_off);
        (0..chunks.len())
            .into_par_iter()
            .filter(|&c| offsets[c] != usize::MAX)
            .for_each(|c| {
                let chunk = chunks[c];
                let state = &states[chunk.group];
                let mut at = offsets[c];
                for &x in &grads[chunk.tensor][chunk.start..][..chunk.len] {
                    let key = x.key();
                    if state.in_bucket(key) {
                        // SAFETY: `assign_candidates` gave this chunk the range [offset, offset + count)
                        // where count is its histogram's bucket count over these same entries, and the
                        // ranges of all chunks are disjoint and inside the buffer.
                        unsafe { out.write(at, key) };
                        at += 1;
                    }
                }
            });
    }

    /// Runs the remaining digits of every unfinished group.
    fn refine<T: GradElem>(&mut self, grads: &[&[T]]) {
        let cands = SharedSlice(self.candidates.as_mut_ptr(), self.candidates.len());
        let (chunks, group_chunks, offs) =
            (&self.chunks, &self.group_chunks, &self.group_chunk_off);
        self.states
            .par_iter_mut()
            .enumerate()
            .filter(|(_, s)| s.stage != Stage::Done)
            .for_each(|(g, state)| {
                let mut hist = [0u32; 1 << REFINE_DIGIT_BITS];
                if state.has_candidates {
                    // SAFETY: groups were given disjoint candidate ranges inside the buffer, and each
                    // group is refined by exactly one task.
                    let keys = unsafe { cands.slice_mut(state.cand_start, state.cand_len) };
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

/// A buffer that parallel tasks write at disjoint positions.
#[derive(Clone, Copy)]
struct SharedSlice(*mut u32, usize);

// SAFETY: every user writes disjoint ranges (see the call sites), so sharing the pointer is sound.
unsafe impl Send for SharedSlice {}
// SAFETY: as above.
unsafe impl Sync for SharedSlice {}

impl SharedSlice {
    /// # Safety
    /// `at < len`, and no other task reads or writes position `at` concurrently.
    unsafe fn write(&self, at: usize, value: u32) {
        assert!(at < self.1);
        // SAFETY: in bounds (checked above); exclusive per the caller's contract.
        unsafe { self.0.add(at).write(value) };
    }

    /// # Safety
    /// `start + len <= self.1`, and no other task touches that range while the slice lives.
    #[allow(clippy::mut_from_ref)]
    unsafe fn slice_mut(&self, start: usize, len: usize) -> &mut [u32] {
        assert!(start + len <= self.1);
        // SAFETY: in bounds (checked above); exclusive per the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}
