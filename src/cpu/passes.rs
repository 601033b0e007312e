//! The passes of `CpuSelector::select`, in the order it runs them (see `select.rs` for the plan).

use rayon::prelude::*;

use super::exact_sum::ExactSum;
use super::pass1::{first_digit_histogram, window_pass, KeyWindow};
use super::radix::{add_counts, GroupState, Stage, PARALLEL_REFINE_MIN};
use super::select::{ChunkCounts, CpuSelector};
use super::shared::SharedSlice;
use crate::config::kept_target;
use crate::select::{without_selection, GroupStats};
use crate::tuning::{FIRST_DIGIT_BINS, FIRST_DIGIT_BITS, REFINE_DIGIT_BITS};
use crate::GradElem;

/// Room after each chunk's candidate range for pass 2's full-width vector stores (the window pass
/// stores 16 keys at a time while at least 16 slots remain).
pub(super) const COMPACT_SLACK: usize = 16;

impl CpuSelector {
    /// Pass 1 over every chunk (window pass or histogram), or, with `recount`, the histogram of
    /// the chunks of the groups whose window missed.
    pub(super) fn first_pass<T: GradElem>(&mut self, grads: &[&[T]], shift: u32, recount: bool) {
        let (chunks, windows, missed) = (&self.chunks, &self.windows, &self.missed);
        let non_finite_key = T::DTYPE.non_finite_key();
        let non_finite_bin = (non_finite_key >> shift) as usize;
        let window_keys = SharedSlice::new(&mut self.window_keys);
        self.chunk_hist
            .par_chunks_mut(FIRST_DIGIT_BINS)
            .zip(self.chunk_spare.par_chunks_mut(FIRST_DIGIT_BINS))
            .zip(self.chunk_counts.par_iter_mut())
            .enumerate()
            .for_each(|(id, ((hist, spare), counts))| {
                let chunk = chunks[id];
                if recount && (chunk.dense || !missed[chunk.group]) {
                    return;
                }
                let data = &grads[chunk.tensor][chunk.start..][..chunk.len];
                let window = windows[chunk.group].filter(|_| !chunk.dense && !recount);
                *counts = ChunkCounts::default();
                if let Some((lo, hi)) = window {
                    // Sharded selectors do not speculate: unsharded chunks are whole leaves.
                    debug_assert_eq!((chunk.whole_start, chunk.whole_end), (0, chunk.len));
                    // SAFETY: chunks own disjoint ranges of the window buffer (laid out in `new`),
                    // and each chunk is handled by exactly one task.
                    let out =
                        unsafe { window_keys.slice_mut(chunk.window_start, chunk.window_cap) };
                    let window = KeyWindow::from_bins(lo, hi, shift);
                    let found = window_pass(data, window, non_finite_key, out, &mut counts.sum);
                    counts.non_finite = found.non_finite;
                    counts.above = found.above;
                    counts.written = found.written;
                } else {
                    hist.fill(0);
                    // Whole leaves add to the chunk's sum; pieces of cut leaves (sharded only)
                    // are summed after the exchange, so their sums here are dropped.
                    let whole = chunk.whole_start..chunk.whole_end;
                    let (mut head, mut tail) = (ExactSum::default(), ExactSum::default());
                    for (piece, sum) in [
                        (&data[..whole.start], &mut head),
                        (&data[whole.clone()], &mut counts.sum),
                        (&data[whole.end..], &mut tail),
                    ] {
                        if !piece.is_empty() {
                            first_digit_histogram(piece, shift, hist, spare, sum);
                        }
                    }
                    counts.non_finite = hist[non_finite_bin..].iter().map(|&c| u64::from(c)).sum();
                    counts.histogram = true;
                }
            });
    }

    /// Per group: stats and the first bucket, from the merged histogram or from the window; a
    /// window that missed marks its group for a recount. With `recount`, only those groups.
    pub(super) fn choose_first_buckets(&mut self, mask_ratio: f64, shift: u32, recount: bool) {
        let (hists, counts, chunks) = (&self.chunk_hist, &self.chunk_counts, &self.chunks);
        let (group_chunks, offs, lens) = (
            &self.group_chunks,
            &self.group_chunk_off,
            &self.map.group_len,
        );
        let windows = &self.windows;
        let window_keys = SharedSlice::new(&mut self.window_keys);
        self.states
            .par_iter_mut()
            .zip(self.selection.groups.par_iter_mut())
            .zip(
                self.previous_bin
                    .par_iter_mut()
                    .zip(self.missed.par_iter_mut()),
            )
            .enumerate()
            .for_each(|(g, ((state, stats), (previous, missed)))| {
                if recount && !*missed {
                    return;
                }
                let mine = &group_chunks[offs[g]..offs[g + 1]];
                let target = kept_target(lens[g], mask_ratio);
                let mut sum = ExactSum::default();
                mine.iter().for_each(|&c| sum.merge(&counts[c].sum));
                *stats = GroupStats {
                    len: lens[g],
                    target,
                    sum_sq: sum.to_f64(),
                    non_finite: mine.iter().map(|&c| counts[c].non_finite).sum(),
                    ..GroupStats::default()
                };
                *state = GroupState {
                    target,
                    shift: shift + FIRST_DIGIT_BITS,
                    ..GroupState::default()
                };
                *missed = false;
                if let Some((threshold_key, kept)) = without_selection(lens[g], target, mask_ratio)
                {
                    return state.finish(threshold_key, kept);
                }
                let mut merged = [0u64; FIRST_DIGIT_BINS];
                if mine.iter().all(|&c| counts[c].histogram) {
                    for &c in mine {
                        for (m, &h) in merged
                            .iter_mut()
                            .zip(&hists[c * FIRST_DIGIT_BINS..][..FIRST_DIGIT_BINS])
                        {
                            *m += u64::from(h);
                        }
                    }
                    state.descend(&merged, shift);
                    *previous = Some(state.prefix);
                    return;
                }
                // Window pass: a hit needs every chunk's copy and the target inside the window.
                let (Some((_, hi)), true) = (
                    windows[g],
                    mine.iter().all(|&c| counts[c].written.is_some()),
                ) else {
                    *missed = true;
                    return;
                };
                let first = chunks[mine[0]].window_start;
                let last = &chunks[mine[mine.len() - 1]];
                // SAFETY: the group's chunks own [first, last.window_start + last.window_cap) of the
                // window buffer, and each group is handled by exactly one task.
                let keys = unsafe {
                    window_keys.slice_mut(first, last.window_start + last.window_cap - first)
                };
                let mut n = 0;
                for &c in mine {
                    let (start, len) = (
                        chunks[c].window_start - first,
                        counts[c].written.unwrap_or(0),
                    );
                    keys.copy_within(start..start + len, n);
                    n += len;
                }
                let above: u64 = mine.iter().map(|&c| counts[c].above).sum();
                if above >= target || target > above + n as u64 {
                    *missed = true;
                    return;
                }
                if (hi as usize) + 1 < FIRST_DIGIT_BINS {
                    merged[hi as usize + 1] = above;
                }
                count_first_digits(&keys[..n], shift, &mut merged);
                state.descend(&merged, shift);
                *previous = Some(state.prefix);
                if state.stage != Stage::Done {
                    state.cand_start = first;
                    state.cand_len = n;
                    state.has_candidates = true;
                    state.in_window = true;
                }
            });
    }

    /// Gives each unfinished group without candidates whose bucket fits a range of the candidate
    /// buffer, and each of its chunks the offset where its bucket's keys go: its count from its
    /// own histogram plus [`COMPACT_SLACK`].
    pub(super) fn assign_candidates(&mut self) {
        let mut cursor = 0usize;
        self.chunk_cand_off.fill(usize::MAX);
        for (g, state) in self.states.iter_mut().enumerate() {
            if state.stage == Stage::Done || state.in_window {
                continue;
            }
            let mine = &self.group_chunks[self.group_chunk_off[g]..self.group_chunk_off[g + 1]];
            // This rank's keys in the bucket (the bucket's count, unsharded), plus the slack.
            let need: usize = mine
                .iter()
                .map(|&c| bucket_count(&self.chunk_hist, c, state.prefix) + COMPACT_SLACK)
                .sum();
            state.has_candidates = cursor + need <= self.candidates.len();
            if !state.has_candidates {
                continue;
            }
            state.cand_start = cursor;
            state.cand_len = need;
            for &c in mine {
                self.chunk_cand_off[c] = cursor;
                cursor += bucket_count(&self.chunk_hist, c, state.prefix) + COMPACT_SLACK;
            }
        }
    }

    /// Pass 2: each chunk copies the keys in its group's bucket to its range of the candidates,
    /// with the vectorized window pass over a window of exactly the bucket (its other counts are
    /// not needed). `refine` closes the gaps between the chunks' runs.
    pub(super) fn compact_candidates<T: GradElem>(&mut self, grads: &[&[T]]) {
        let (chunks, states, offsets, hists) = (
            &self.chunks,
            &self.states,
            &self.chunk_cand_off,
            &self.chunk_hist,
        );
        let non_finite_key = T::DTYPE.non_finite_key();
        let out = SharedSlice::new(&mut self.candidates);
        (0..chunks.len())
            .into_par_iter()
            .filter(|&c| offsets[c] != usize::MAX)
            .for_each(|c| {
                let chunk = chunks[c];
                let state = &states[chunk.group];
                let count = bucket_count(hists, c, state.prefix);
                // SAFETY: `assign_candidates` gave this chunk [offset, offset + count + slack),
                // where count is its own histogram's bucket count; the ranges are disjoint.
                let keys = unsafe { out.slice_mut(offsets[c], count + COMPACT_SLACK) };
                let bucket = KeyWindow {
                    lo: state.prefix << state.shift,
                    span: (1 << state.shift) - 1,
                };
                let found = window_pass(
                    &grads[chunk.tensor][chunk.start..][..chunk.len],
                    bucket,
                    non_finite_key,
                    keys,
                    &mut ExactSum::default(), // the sums are pass 1's
                );
                debug_assert_eq!(found.written, Some(count));
            });
    }

    /// Runs the remaining digits of every unfinished group.
    pub(super) fn refine<T: GradElem>(&mut self, grads: &[&[T]]) {
        let candidates = SharedSlice::new(&mut self.candidates);
        let window_keys = SharedSlice::new(&mut self.window_keys);
        let (chunks, group_chunks, offs) =
            (&self.chunks, &self.group_chunks, &self.group_chunk_off);
        let (cand_off, hists) = (&self.chunk_cand_off, &self.chunk_hist);
        self.states
            .par_iter_mut()
            .enumerate()
            .filter(|(_, s)| s.stage != Stage::Done)
            .for_each(|(g, state)| {
                let mut hist = [0u64; 1 << REFINE_DIGIT_BITS];
                if state.has_candidates {
                    let buffer = if state.in_window {
                        window_keys
                    } else {
                        candidates
                    };
                    // SAFETY: groups own disjoint ranges of both buffers, and each group is refined by
                    // exactly one task.
                    let mut keys = unsafe { buffer.slice_mut(state.cand_start, state.cand_len) };
                    if !state.in_window {
                        let mine = &group_chunks[offs[g]..offs[g + 1]];
                        let n = close_gaps(mine, cand_off, hists, state, keys);
                        keys = &mut keys[..n];
                    }
                    if keys.len() >= PARALLEL_REFINE_MIN {
                        state.refine_parallel(keys);
                    } else {
                        state.refine_slice(keys, &mut hist);
                    }
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

/// Chunk `chunk`'s count in first-digit bin `bin`, from the chunks' histograms `hists`.
fn bucket_count(hists: &[u32], chunk: usize, bin: u32) -> usize {
    hists[chunk * FIRST_DIGIT_BINS + bin as usize] as usize
}

/// Moves the runs of pass-2 candidates of a group's chunks (`mine`) together at the start of the
/// group's range, `keys`; returns how many there are.
pub(super) fn close_gaps(
    mine: &[usize],
    cand_off: &[usize],
    hists: &[u32],
    state: &GroupState,
    keys: &mut [u32],
) -> usize {
    let mut n = 0;
    for &c in mine {
        let start = cand_off[c] - state.cand_start;
        let count = bucket_count(hists, c, state.prefix);
        keys.copy_within(start..start + count, n);
        n += count;
    }
    n
}

/// Adds the first-digit histogram of `keys` (a window hit's copies) to `merged`; several tasks
/// for a large window.
fn count_first_digits(keys: &[u32], shift: u32, merged: &mut [u64; FIRST_DIGIT_BINS]) {
    if keys.len() < PARALLEL_REFINE_MIN {
        for &key in keys {
            merged[(key >> shift) as usize] += 1;
        }
        return;
    }
    let part = keys.len().div_ceil(rayon::current_num_threads() * 4);
    let hist = keys
        .par_chunks(part)
        .map(|part| {
            let mut hist = [0u64; FIRST_DIGIT_BINS];
            for &key in part {
                hist[(key >> shift) as usize] += 1;
            }
            hist
        })
        .reduce(|| [0u64; FIRST_DIGIT_BINS], add_counts);
    *merged = add_counts(*merged, hist);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_digit_counts_agree_serial_and_parallel() {
        let shift = 19;
        let keys: Vec<u32> = (0..PARALLEL_REFINE_MIN as u64 + 12_345)
            .map(|i| ((i * 2_654_435_761) % (1 << 31)) as u32)
            .collect();
        let mut want = [0u64; FIRST_DIGIT_BINS];
        for &key in &keys {
            want[(key >> shift) as usize] += 1;
        }
        want[7] += 3; // counts are added to what is there
        let mut got = [0u64; FIRST_DIGIT_BINS];
        got[7] = 3;
        count_first_digits(&keys, shift, &mut got); // large: several tasks
        assert_eq!(got, want);
        let mut small = [0u64; FIRST_DIGIT_BINS];
        count_first_digits(&keys[..1000], shift, &mut small);
        assert_eq!(small.iter().sum::<u64>(), 1000);
    }
}
