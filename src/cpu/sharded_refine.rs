//! The refinement digits of a sharded CPU selection (`sharded.rs`): each rank histograms its own
//! candidates (or slices), one all-reduce per digit carries every group still refining, and
//! every rank descends the same way.

use rayon::prelude::*;

use super::radix::{GroupState, Stage};
use super::select::CpuSelector;
use super::sharded::{Buffer, Sharded};
use super::shared::SharedSlice;
use crate::shard::Collective;
use crate::{GradElem, Result};

impl CpuSelector {
    /// Moves each candidate group's runs of pass-2 keys together; its `cand_len` becomes their
    /// count.
    pub(super) fn close_all_gaps(&mut self) {
        let candidates = SharedSlice::new(&mut self.candidates);
        let (group_chunks, offs) = (&self.group_chunks, &self.group_chunk_off);
        let (cand_off, hists) = (&self.chunk_cand_off, &self.chunk_hist);
        self.states
            .par_iter_mut()
            .enumerate()
            .filter(|(_, s)| s.stage != Stage::Done && s.has_candidates)
            .for_each(|(g, state)| {
                // SAFETY: groups own disjoint ranges of the candidate buffer, one task per group.
                let keys = unsafe { candidates.slice_mut(state.cand_start, state.cand_len) };
                let mine = &group_chunks[offs[g]..offs[g + 1]];
                state.cand_len = super::passes::close_gaps(mine, cand_off, hists, state, keys);
            });
    }

    /// One refinement digit over every group still refining: local histograms, one all-reduce,
    /// the same descent on every rank. Returns false when no group was left.
    pub(super) fn refine_round<T: GradElem>(
        &mut self,
        sh: &mut Sharded,
        collective: &mut dyn Collective,
        grads: &[&[T]],
    ) -> Result<bool> {
        sh.active.clear();
        sh.active
            .extend((0..self.states.len()).filter(|&g| self.states[g].stage == Stage::Refine));
        let Some(&first) = sh.active.first() else {
            return Ok(false);
        };
        let (width, digit_shift) = self.states[first].next_digit();
        let bins = 1usize << width;
        let len = sh.active.len() * bins;
        sh.refine[..len].fill(0);
        let candidates = SharedSlice::new(&mut self.candidates);
        let (chunks, group_chunks, offs) =
            (&self.chunks, &self.group_chunks, &self.group_chunk_off);
        let states = SharedStates::new(&mut self.states);
        sh.refine[..len]
            .par_chunks_mut(bins)
            .zip(sh.active.par_iter())
            .for_each(|(hist, &g)| {
                // SAFETY: each active group is handled by exactly one task.
                let state = unsafe { states.get(g) };
                debug_assert_eq!(state.next_digit(), (width, digit_shift));
                if state.has_candidates {
                    // SAFETY: groups own disjoint ranges of the candidate buffer.
                    let keys = unsafe { candidates.slice_mut(state.cand_start, state.cand_len) };
                    state.cand_len = state.digit_pass(keys, width, digit_shift, hist);
                } else {
                    let digit_mask = (1u32 << width) - 1;
                    for &c in &group_chunks[offs[g]..offs[g + 1]] {
                        let chunk = chunks[c];
                        for x in &grads[chunk.tensor][chunk.start..][..chunk.len] {
                            let key = x.key();
                            if state.in_bucket(key) {
                                hist[((key >> digit_shift) & digit_mask) as usize] += 1;
                            }
                        }
                    }
                }
            });
        sh.all_reduce(collective, Buffer::Refine(len))?;
        for (i, &g) in sh.active.iter().enumerate() {
            descend_shared(
                &mut self.states[g],
                &sh.refine[i * bins..][..bins],
                digit_shift,
            );
        }
        Ok(true)
    }
}

/// [`GroupState::descend`] on a reduced histogram, without the early exit (see the module notes).
pub(super) fn descend_shared(state: &mut GroupState, hist: &[u64], digit_shift: u32) {
    state.descend(hist, digit_shift);
    if state.stage == Stage::Min {
        state.stage = Stage::Refine;
    }
}

/// The group states, shared by tasks that each touch one group.
#[derive(Clone, Copy)]
struct SharedStates(*mut GroupState, usize);

// SAFETY: tasks touch disjoint states (one per active group).
unsafe impl Send for SharedStates {}
// SAFETY: as above.
unsafe impl Sync for SharedStates {}

impl SharedStates {
    fn new(states: &mut [GroupState]) -> Self {
        SharedStates(states.as_mut_ptr(), states.len())
    }

    /// # Safety
    /// No other task touches state `g` while the reference lives, and the states outlive it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get(&self, g: usize) -> &mut GroupState {
        assert!(g < self.1);
        // SAFETY: in bounds (checked); exclusive and alive per the caller's contract.
        unsafe { &mut *self.0.add(g) }
    }
}
