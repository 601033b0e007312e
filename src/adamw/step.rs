//! The stages of one `GmtAdamW` step after its inputs are checked: `prepare` (the selection, or
//! the read-only scan when no selection runs) decides skip, norm and keep rules; `apply` runs the
//! fused update (then, when tracked, the mask-stability pass) and advances the counter; `report`
//! describes the result.

use rayon::prelude::*;

use super::config::{MaskMode, StepReport};
use super::cpu::{update_all, KeepRule, Params, SharedPtr, UpdateArgs};
use super::math::{grad_multiplier, StepScalars};
use super::optimizer::{GmtAdamW, Precision};
use crate::config::kept_target;
use crate::cpu::exact_sum::ExactSum;
use crate::cpu::sum_sq_and_non_finite;
use crate::rng::{random_cut, stream};
use crate::select::{without_selection, KEEP_NONE};
use crate::{GradElem, GroupStats, Result};

impl GmtAdamW {
    /// Runs the selection or the scan and fills `groups`, `sum_sq` and the keep rules. Returns
    /// false when the step must be skipped. Touches only workspace.
    /// Sharded, it runs the ranks' collectives (`tag`: this step's header word, see
    /// `sharded.rs`); an error there returns before anything but workspace changed.
    pub(super) fn prepare<G: GradElem>(&mut self, grads: &[&[G]], tag: u64) -> Result<bool> {
        let ratio = self.mask.mask_ratio;
        let non_finite = if let Some(selector) = &mut self.selector {
            let selection = match &mut self.sharded {
                Some(sh) => selector.select_with(grads, ratio, &mut *sh.collective, tag)?,
                None => selector
                    .select(grads, ratio)
                    .expect("ratio and lengths were checked"),
            };
            self.groups.copy_from_slice(&selection.groups);
            self.sum_sq = selection.sum_sq;
            let non_finite = selection.non_finite;
            if let Some(sh) = &mut self.sharded {
                sh.comm = selector.comm_stats();
            }
            non_finite
        } else if self.sharded.is_some() {
            self.scan_sharded(grads, tag)?
        } else {
            self.scan(grads)
        };
        let random = match self.mode {
            MaskMode::Random { seed } if self.mask.mask_ratio > 0.0 => Some(KeepRule::Random {
                key: stream(seed, self.step + 1),
                cut: random_cut(self.mask.mask_ratio),
            }),
            _ => None,
        };
        let thresholds = self.selector.as_ref().map(|s| s.last());
        for (t, rule) in self.rules.iter_mut().enumerate() {
            *rule = if self.frozen[t] {
                KeepRule::Frozen
            } else if self.table.dense()[t] {
                KeepRule::All
            } else if let Some(selection) = thresholds {
                KeepRule::Threshold(selection.group_of_tensor(t).threshold_key)
            } else {
                random.unwrap_or(KeepRule::All)
            };
        }
        Ok(non_finite == 0)
    }

    /// The read-only pass of a step without selection: per-chunk sums of squares and non-finite
    /// counts, added per group in chunk order (as the selector does). Returns the non-finite total.
    fn scan<G: GradElem>(&mut self, grads: &[&[G]]) -> u64 {
        self.scan_chunks(grads);
        let mut total = ExactSum::default();
        self.chunk_sum_sq.iter().for_each(|s| total.merge(s));
        self.sum_sq = total.to_f64();
        for g in 0..self.groups.len() {
            let mine = &self.group_chunks[self.group_chunk_off[g]..self.group_chunk_off[g + 1]];
            let mut sum = ExactSum::default();
            mine.iter().for_each(|&c| sum.merge(&self.chunk_sum_sq[c]));
            let non_finite = mine.iter().map(|&c| self.chunk_non_finite[c]).sum();
            self.groups[g] = self.scanned_stats(g, &sum, non_finite);
        }
        self.chunk_non_finite.iter().sum()
    }

    /// A group's stats after a scan: its sum and non-finite count, and the kept count the
    /// selection would give without running (mask off: everything, an empty group nothing; the
    /// random mask counts its kept entries in the update).
    pub(super) fn scanned_stats(&self, g: usize, sum: &ExactSum, non_finite: u64) -> GroupStats {
        let len = self.map.group_len[g];
        let target = kept_target(len, self.mask.mask_ratio);
        let (threshold_key, kept, threshold) = if self.mask.mask_ratio > 0.0 {
            (0, 0, f32::NAN)
        } else {
            let (key, kept) = without_selection(len, target, 0.0).expect("r = 0 needs none");
            let threshold = if key == KEEP_NONE { f32::INFINITY } else { 0.0 };
            (key, kept, threshold)
        };
        GroupStats {
            len,
            target,
            kept,
            threshold_key,
            threshold,
            sum_sq: sum.to_f64(),
            non_finite,
        }
    }

    /// Per chunk: the sum of g^2 of its whole leaves and its non-finite count.
    pub(super) fn scan_chunks<G: GradElem>(&mut self, grads: &[&[G]]) {
        let chunks = &self.chunks;
        self.chunk_sum_sq
            .par_iter_mut()
            .zip(self.chunk_non_finite.par_iter_mut())
            .zip(chunks.par_iter())
            .for_each(|((sum, non_finite), c)| {
                *sum = ExactSum::default();
                let data = &grads[c.tensor][c.start..][..c.len];
                // Pieces of cut leaves (sharded only) are summed after the exchange.
                let mut dropped = ExactSum::default();
                let (lo, hi) = (c.whole_start, c.whole_end);
                *non_finite = sum_sq_and_non_finite(&data[..lo], &mut dropped)
                    + sum_sq_and_non_finite(&data[lo..hi], sum)
                    + sum_sq_and_non_finite(&data[hi..], &mut dropped);
            });
    }

    /// Takes the step: scalars, the fused update, the counter.
    ///
    /// # Safety
    /// The pointer table of `precision` (`f32_ptrs` or `bf16_ptrs`) holds, for every tensor, a
    /// buffer of the tensor's length that is exclusively borrowed for the duration of the call, and
    /// for `Bf16Master` the master buffer holds the table's total length.
    pub(super) unsafe fn apply<G: GradElem>(
        &mut self,
        grads: &[&[G]],
        lr: f64,
        precision: Precision,
        key: u64,
    ) {
        let step = self.step + 1;
        let (grad_mul, _) = grad_multiplier(&self.adamw, self.sum_sq);
        let scalars = StepScalars::new(&self.adamw, step, lr, grad_mul);
        let params = match precision {
            Precision::F32 => Params::F32(&self.f32_ptrs),
            Precision::Bf16Master => {
                Params::Master(&self.bf16_ptrs, SharedPtr(self.master.as_mut_ptr()))
            }
            Precision::Bf16Stochastic => Params::Round(&self.bf16_ptrs, key),
        };
        // SAFETY: the caller's contract covers the parameters and the master; m and v hold the
        // table's total length, and `chunks` is the table's chunk list.
        unsafe {
            update_all(
                &self.chunks,
                &self.rules,
                grads,
                params,
                &mut self.m,
                &mut self.v,
                &UpdateArgs {
                    masked: self.mask.masked,
                    scalars,
                },
                &mut self.chunk_kept,
            )
        };
        // Sharded, the kept counts came with the exchange (`scan_sharded`).
        let random = matches!(self.mode, MaskMode::Random { .. }) && self.mask.mask_ratio > 0.0;
        if random && self.sharded.is_none() {
            for stats in &mut self.groups {
                stats.kept = 0;
            }
            for (c, kept) in self.chunks.iter().zip(&self.chunk_kept) {
                if !self.table.dense()[c.tensor] {
                    self.groups[self.map.group_of[c.tensor] as usize].kept += kept;
                }
            }
        }
        if let Some(tracker) = &mut self.stability {
            tracker.record(&self.chunks, &self.rules, grads, step);
        }
        self.step = step;
        self.precision = Some(precision);
    }

    pub(super) fn report(&self, skipped: bool) -> StepReport {
        StepReport {
            skipped,
            step: self.step,
            groups: self.groups.clone(),
            grad_norm: grad_multiplier(&self.adamw, self.sum_sq).1,
        }
    }
}
