//! Mask stability: per tensor, how many of the entries kept at a step were also kept at the step
//! taken before it. GMT's premise is that the gradient picks out a stable subset of task-relevant
//! entries; a random mask at ratio r keeps about `1 - r` of them from one step to the next.
//!
//! Off by default, and then free: no buffer exists and a step does no extra work. When on
//! ([`GmtAdamW::track_stability`]), the optimizer keeps one bit per entry (the mask of the last step
//! taken), and each step taken runs one more parallel pass over the work list after the fused
//! update: it re-decides every entry's fate with the tensor's keep rule (the same rule the update
//! used), counts the kept entries and those whose previous bit was also set, and overwrites the
//! bits. The pass reads the gradients once more (4 B per f32 entry, plus 1/4 B of bits); its
//! measured cost is in benches/NOTES.md.
//!
//! A skipped step (Inf or NaN) changes neither the bits nor [`GmtAdamW::stability`]; the next step
//! taken compares with the last one taken. The bits are not part of a checkpoint: after a load,
//! the first step taken has no previous mask.
//!
//! For a CUDA implementation (`CudaGmtAdamW` does not track stability yet): one kernel after the
//! fused update, over the same work list, reading g, the group thresholds on the device (or the
//! random-mask draw) and the skip flag; each warp forms a 32-entry word of the new mask with a
//! ballot, and per-tensor counts are summed with one atomic add per warp. The bit layout is the
//! engine's own business; only the counts are compared.

use rayon::prelude::*;

use super::cpu::{Chunk, KeepRule};
use crate::rng::draw;
use crate::GradElem;

/// One tensor's mask at a step compared with the previous step taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TensorStability {
    /// Entries kept at this step (those the update used; 0 for a frozen tensor).
    pub kept: u64,
    /// Of those, the entries also kept at the previous step taken (0 without one).
    pub kept_before: u64,
}

/// The mask stability of the last step taken, per tensor in table order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskStability {
    /// The 1-based step the counts belong to.
    pub step: u64,
    /// False at the first step tracked (after `track_stability` or a checkpoint load): there was
    /// no previous mask, and every `kept_before` is 0.
    pub has_previous: bool,
    pub tensors: Vec<TensorStability>,
}

impl MaskStability {
    /// `sum(kept_before) / sum(kept)` over `tensors`: the fraction of their entries kept at this
    /// step that were kept at the step before. `None` without a previous step or a kept entry.
    pub fn fraction(&self, tensors: impl IntoIterator<Item = usize>) -> Option<f64> {
        let (kept, before) = tensors.into_iter().fold((0u64, 0u64), |(k, b), t| {
            (k + self.tensors[t].kept, b + self.tensors[t].kept_before)
        });
        (self.has_previous && kept > 0).then(|| before as f64 / kept as f64)
    }
}

/// The tracker's buffers, sized once: per chunk, the last mask as 64-entry words and its counts;
/// the result of the last step recorded.
pub(crate) struct Tracker {
    bits: Vec<Vec<u64>>,
    counts: Vec<TensorStability>,
    result: MaskStability,
    /// Whether `bits` and `result` hold a step (false until the first step recorded).
    recorded: bool,
}

impl Tracker {
    pub(crate) fn new(chunks: &[Chunk], n_tensors: usize) -> Self {
        Tracker {
            bits: chunks.iter().map(|c| vec![0; c.len.div_ceil(64)]).collect(),
            counts: vec![TensorStability::default(); chunks.len()],
            result: MaskStability {
                step: 0,
                has_previous: false,
                tensors: vec![TensorStability::default(); n_tensors],
            },
            recorded: false,
        }
    }

    pub(crate) fn last(&self) -> Option<&MaskStability> {
        self.recorded.then_some(&self.result)
    }

    /// Forgets the last mask (after a checkpoint load, which does not hold it).
    pub(crate) fn forget(&mut self) {
        self.recorded = false;
    }

    /// Records the mask of step `step`, taken with `rules` on `grads`.
    pub(crate) fn record<G: GradElem>(
        &mut self,
        chunks: &[Chunk],
        rules: &[KeepRule],
        grads: &[&[G]],
        step: u64,
    ) {
        self.bits
            .par_iter_mut()
            .zip(self.counts.par_iter_mut())
            .zip(chunks.par_iter())
            .for_each(|((bits, counts), c)| {
                let g = &grads[c.tensor][c.start..][..c.len];
                *counts = record_chunk(g, c.global, rules[c.tensor], bits);
            });
        let has_previous = self.recorded;
        let result = &mut self.result;
        result.step = step;
        result.has_previous = has_previous;
        result.tensors.fill(TensorStability::default());
        for (c, counts) in chunks.iter().zip(&self.counts) {
            let t = &mut result.tensors[c.tensor];
            t.kept += counts.kept;
            if has_previous {
                t.kept_before += counts.kept_before;
            }
        }
        self.recorded = true;
    }
}

/// Decides each entry of one chunk as the update did, counts the kept ones and those whose old bit
/// was set, and stores the new bits.
fn record_chunk<G: GradElem>(
    grads: &[G],
    global: u64,
    rule: KeepRule,
    bits: &mut [u64],
) -> TensorStability {
    match rule {
        KeepRule::All => words(grads.len(), bits, |_| true),
        KeepRule::Threshold(t) => words(grads.len(), bits, |i| grads[i].key() >= t),
        KeepRule::Random { key, cut } => words(grads.len(), bits, |i| {
            u64::from(draw(key, global + i as u64)) >= cut
        }),
        KeepRule::Frozen => words(grads.len(), bits, |_| false),
    }
}

#[inline(always)]
fn words(n: usize, bits: &mut [u64], keeps: impl Fn(usize) -> bool) -> TensorStability {
    let mut out = TensorStability::default();
    for (w, word) in bits.iter_mut().enumerate() {
        let start = w * 64;
        let mut new = 0u64;
        for j in 0..(n - start).min(64) {
            new |= u64::from(keeps(start + j)) << j;
        }
        out.kept += u64::from(new.count_ones());
        out.kept_before += u64::from((new & *word).count_ones());
        *word = new;
    }
    out
}
