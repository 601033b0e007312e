//! `GmtAdamW`: selection and the fused masked AdamW, tied together, with the optimizer's state.
//!
//! A step: check the inputs (a rejected call changes nothing); run the selection (GMT with
//! `mask_ratio > 0`) or a read-only scan (mask off, random mask) that yields the sum of squares and
//! the non-finite count; skip if anything is Inf or NaN; otherwise turn the sum of squares into the
//! gradient multiplier (grad scale, clipping), give every tensor its keep rule, and run the fused
//! update over the work list.
//!
//! All state (m, v) and workspace is sized in `new`; the master weights on the first
//! `step_bf16_master`. A step allocates only the report's `groups` (a clone of a workspace vector,
//! one entry per group); rayon may allocate inside its own scheduler.

use half::bf16;
use rayon::prelude::*;

use std::ops::Range;

use super::config::{AdamWConfig, MaskMode, StepReport};
use super::cpu::{chunk_list, Chunk, KeepRule, SharedPtr};
use super::sharded::OptShards;
use super::stability::{MaskStability, Tracker};
use crate::cpu::exact_sum::ExactSum;
use crate::rng::{stream, ROUNDING_DOMAIN};
use crate::work::whole_tensors;
use crate::{CpuSelector, Error, GradElem, GroupMap, GroupStats, MaskConfig, Result, TensorTable};

/// How parameters are stored and rounded; fixed by the first step taken (or a loaded checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// f32 parameters (`step`), with f32, bf16 or f16 gradients.
    F32,
    /// bf16 parameters with f32 master weights kept by the optimizer (`step_bf16_master`).
    Bf16Master,
    /// bf16 parameters, no master, stochastic rounding (`step_bf16_stochastic`).
    Bf16Stochastic,
}

impl Precision {
    /// The name used in errors and checkpoints.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16Master => "bf16+master",
            Precision::Bf16Stochastic => "bf16+stochastic",
        }
    }

    /// The inverse of [`Precision::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::F32, Self::Bf16Master, Self::Bf16Stochastic]
            .into_iter()
            .find(|p| p.name() == name)
    }
}

/// GMT with AdamW on host slices: the CPU engine. See the module notes for what a step does.
pub struct GmtAdamW {
    pub(super) table: TensorTable,
    /// This rank's slices as a table (lengths, group ids, dense flags): the buffers a step takes
    /// and the state it keeps. The table itself, unsharded.
    pub(super) local: TensorTable,
    /// The layout and collective of a sharded optimizer.
    pub(super) sharded: Option<Box<OptShards>>,
    pub(super) map: GroupMap,
    pub(super) adamw: AdamWConfig,
    pub(super) mask: MaskConfig,
    pub(super) mode: MaskMode,
    pub(super) selector: Option<CpuSelector>,
    pub(super) frozen: Vec<bool>,
    pub(super) step: u64,
    pub(super) precision: Option<Precision>,
    pub(super) m: Vec<f32>,
    pub(super) v: Vec<f32>,
    /// Empty until the first `step_bf16_master` that is taken.
    pub(super) master: Vec<f32>,
    // Workspace, sized once.
    pub(super) chunks: Vec<Chunk>,
    /// Non-dense chunk ids by selection group, in chunk order: group g owns
    /// `group_chunks[group_chunk_off[g]..group_chunk_off[g + 1]]`.
    pub(super) group_chunks: Vec<usize>,
    pub(super) group_chunk_off: Vec<usize>,
    pub(super) rules: Vec<KeepRule>,
    pub(super) chunk_sum_sq: Vec<ExactSum>,
    pub(super) chunk_non_finite: Vec<u64>,
    pub(super) chunk_kept: Vec<u64>,
    pub(super) f32_ptrs: Vec<SharedPtr<f32>>,
    pub(super) bf16_ptrs: Vec<SharedPtr<bf16>>,
    pub(super) groups: Vec<GroupStats>,
    pub(super) sum_sq: f64,
    /// The tensors' names joined by newlines (empty: unnamed), recorded in checkpoints.
    pub(super) names: String,
    /// Mask-stability tracking: `None` (the default) costs nothing.
    pub(super) stability: Option<Tracker>,
}

impl GmtAdamW {
    /// An optimizer for `table`'s tensors. Rejects betas outside [0, 1), eps <= 0, a negative or
    /// non-finite weight decay, a grad scale or max norm that is not finite and > 0, a mask ratio
    /// outside [0, 1], and values the f32 update cannot use (see [`AdamWConfig::validate`]).
    pub fn new(table: TensorTable, adamw: AdamWConfig, mask: MaskConfig) -> Result<Self> {
        adamw.validate()?;
        mask.validate()?;
        let local = table.clone();
        Ok(Self::build(table, local, adamw, mask, None))
    }

    /// The optimizer of `table` for this rank's slices (`local`), all inputs checked.
    pub(super) fn build(
        table: TensorTable,
        local: TensorTable,
        adamw: AdamWConfig,
        mask: MaskConfig,
        sharded: Option<Box<OptShards>>,
    ) -> Self {
        let map = GroupMap::new(&table, mask.scope);
        let ranges: Vec<Range<usize>> = match &sharded {
            Some(sh) => (0..table.len()).map(|t| sh.layout.local_range(t)).collect(),
            None => whole_tensors(&table),
        };
        let chunks = chunk_list(&table, &ranges);
        let (n, total) = (table.len(), local.total_len() as usize);
        let mut group_chunk_off = vec![0usize; map.n_groups() + 1];
        let mut group_chunks = Vec::new();
        for (g, off) in group_chunk_off.iter_mut().skip(1).enumerate() {
            group_chunks.extend((0..chunks.len()).filter(|&c| {
                let tensor = chunks[c].tensor;
                map.group_of[tensor] as usize == g && !table.dense()[tensor]
            }));
            *off = group_chunks.len();
        }
        let mut opt = GmtAdamW {
            selector: None,
            frozen: vec![false; n],
            step: 0,
            precision: None,
            m: vec![0.0; total],
            v: vec![0.0; total],
            master: Vec::new(),
            rules: vec![KeepRule::All; n],
            chunk_sum_sq: vec![ExactSum::default(); chunks.len()],
            chunk_non_finite: vec![0; chunks.len()],
            chunk_kept: vec![0; chunks.len()],
            f32_ptrs: vec![SharedPtr(std::ptr::null_mut()); n],
            bf16_ptrs: vec![SharedPtr(std::ptr::null_mut()); n],
            groups: vec![GroupStats::default(); map.n_groups()],
            sum_sq: 0.0,
            names: String::new(),
            stability: None,
            chunks,
            group_chunks,
            group_chunk_off,
            map,
            table,
            local,
            sharded,
            adamw,
            mask,
            mode: MaskMode::Gmt,
        };
        opt.set_mode(MaskMode::Gmt);
        opt
    }

    /// Chooses GMT (the default) or the random-mask baseline at the same ratio.
    pub fn with_mask_mode(mut self, mode: MaskMode) -> Self {
        self.set_mode(mode);
        self
    }

    pub(super) fn set_mode(&mut self, mode: MaskMode) {
        self.mode = mode;
        let needs_selector = mode == MaskMode::Gmt && self.mask.mask_ratio > 0.0;
        if !needs_selector {
            self.selector = None;
        } else if self.selector.is_none() {
            self.selector = Some(match &self.sharded {
                Some(sh) => CpuSelector::sharded_lent(&self.table, self.mask.scope, &sh.layout),
                None => CpuSelector::new(&self.table, self.mask.scope),
            });
        }
    }

    /// Fixes which tensors are frozen (HFT): their p, m and v are left untouched by every step.
    /// Their gradients still count in the selection, the norm and the non-finite check.
    pub fn set_frozen(&mut self, frozen: &[bool]) -> Result<()> {
        self.table.check_count("frozen flags", frozen.len())?;
        self.frozen.copy_from_slice(frozen);
        Ok(())
    }

    /// Turns mask-stability tracking on or off (see [`MaskStability`]). On allocates one bit per
    /// entry and adds one pass over the gradients to every step taken; off frees the bits. The
    /// first step taken after turning it on has no previous mask to compare with.
    pub fn track_stability(&mut self, on: bool) {
        if !on {
            self.stability = None;
        } else if self.stability.is_none() {
            self.stability = Some(Tracker::new(&self.chunks, self.table.len()));
        }
    }

    /// The mask stability of the last step taken, when tracking is on and a step has been taken
    /// since it was turned on (a skipped step leaves it as it was: compare its `step` with the
    /// report's).
    pub fn stability(&self) -> Option<&MaskStability> {
        self.stability.as_ref().and_then(Tracker::last)
    }

    /// Steps taken so far (skipped steps do not count).
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The table this optimizer was built for.
    pub fn table(&self) -> &TensorTable {
        &self.table
    }

    /// The precision fixed by the first step taken or by a loaded checkpoint.
    pub fn precision(&self) -> Option<Precision> {
        self.precision
    }

    /// The first and second moments, flat in table order (tensor `t` starts at `offsets()[t]`;
    /// sharded: this rank's slices, flat in table order).
    pub fn moments(&self) -> (&[f32], &[f32]) {
        (&self.m, &self.v)
    }

    /// The f32 master weights, flat in table order, once a `step_bf16_master` has been taken.
    pub fn master(&self) -> Option<&[f32]> {
        (self.precision == Some(Precision::Bf16Master)).then_some(&self.master[..])
    }

    /// One step on f32 parameters with f32, bf16 or f16 gradients, at learning rate `lr`.
    pub fn step<G: GradElem>(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[&[G]],
        lr: f64,
    ) -> Result<StepReport> {
        self.check(Precision::F32, lr, params.iter().map(|p| p.len()), grads)?;
        if !self.prepare(grads, self.tag(Precision::F32, lr, 0))? {
            return Ok(self.report(true));
        }
        for (ptr, p) in self.f32_ptrs.iter_mut().zip(params.iter_mut()) {
            *ptr = SharedPtr(p.as_mut_ptr());
        }
        // SAFETY: `check` matched every parameter buffer's length to the table, and `params` is
        // borrowed mutably for this whole call.
        unsafe { self.apply(grads, lr, Precision::F32, 0) };
        Ok(self.report(false))
    }

    /// One step on bf16 parameters with f32 master weights kept here (initialised from `params` on
    /// the first step taken); each parameter is then its master rounded to nearest even.
    pub fn step_bf16_master(
        &mut self,
        params: &mut [&mut [bf16]],
        grads: &[&[bf16]],
        lr: f64,
    ) -> Result<StepReport> {
        self.check(
            Precision::Bf16Master,
            lr,
            params.iter().map(|p| p.len()),
            grads,
        )?;
        if !self.prepare(grads, self.tag(Precision::Bf16Master, lr, 0))? {
            return Ok(self.report(true));
        }
        if self.precision != Some(Precision::Bf16Master) {
            self.master = vec![0.0; self.local.total_len() as usize];
            for (c, (at, p)) in self.local.offsets().iter().zip(params.iter()).enumerate() {
                let dst = &mut self.master[*at as usize..][..self.local.lengths()[c]];
                dst.par_iter_mut()
                    .zip(p.par_iter())
                    .for_each(|(d, s)| *d = s.to_f32());
            }
        }
        self.fill_bf16_ptrs(params);
        // SAFETY: as in `step`; the master buffer holds the table's total length.
        unsafe { self.apply(grads, lr, Precision::Bf16Master, 0) };
        Ok(self.report(false))
    }

    /// One step on bf16 parameters without master weights: each new value is rounded to bf16
    /// stochastically with `rng::mix(seed ^ ROUNDING_DOMAIN, step, global index)` (see [`crate::rng`]),
    /// so the result does not depend on chunking or threads.
    pub fn step_bf16_stochastic(
        &mut self,
        params: &mut [&mut [bf16]],
        grads: &[&[bf16]],
        lr: f64,
        seed: u64,
    ) -> Result<StepReport> {
        let lens = params.iter().map(|p| p.len());
        self.check(Precision::Bf16Stochastic, lr, lens, grads)?;
        if !self.prepare(grads, self.tag(Precision::Bf16Stochastic, lr, seed))? {
            return Ok(self.report(true));
        }
        self.fill_bf16_ptrs(params);
        let key = stream(seed ^ ROUNDING_DOMAIN, self.step + 1);
        // SAFETY: as in `step`.
        unsafe { self.apply(grads, lr, Precision::Bf16Stochastic, key) };
        Ok(self.report(false))
    }

    fn fill_bf16_ptrs(&mut self, params: &mut [&mut [bf16]]) {
        for (ptr, p) in self.bf16_ptrs.iter_mut().zip(params.iter_mut()) {
            *ptr = SharedPtr(p.as_mut_ptr());
        }
    }

    /// Rejects a bad lr (also in f32, for the step about to be taken), a precision other than the
    /// one in use, and buffers of the wrong count or length. Changes nothing.
    fn check<G: GradElem>(
        &self,
        precision: Precision,
        lr: f64,
        param_lens: impl ExactSizeIterator<Item = usize>,
        grads: &[&[G]],
    ) -> Result<()> {
        self.adamw.validate_step(self.step + 1, lr)?;
        if let Some(expected) = self.precision.filter(|&p| p != precision) {
            return Err(Error::PrecisionMismatch {
                expected: expected.name(),
                got: precision.name(),
            });
        }
        self.local.check_lengths("parameters", param_lens)?;
        self.local
            .check_lengths("gradients", grads.iter().map(|g| g.len()))
    }
}

// The trainer may move the optimizer to another thread or share it read-only.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<GmtAdamW>();
};
