//! `CudaGmtAdamW`: GMT with AdamW on cudarc buffers, on the caller's stream (DESIGN.md §1, §3).
//!
//! A step enqueues the selection ([`CudaSelector`]: the exact threshold at `mask_ratio > 0` in GMT
//! mode, otherwise only its first pass, for the norm and the non-finite count), then one launch of
//! the fused masked AdamW (`kernels/adamw.cu`), and returns without waiting for the device.
//!
//! The skip decision (an Inf or NaN gradient anywhere) is taken on the device, and so is the step
//! counter behind the bias correction and the rng streams (a skipped step does not count, as on
//! the CPU). The host sends the scalars of every step number the device may be at, computed
//! exactly as the CPU engine does, and the device picks its own (`plan`): a step neither waits for
//! the previous step's skip flag nor synchronises. It waits only where it cannot be planned
//! otherwise: 32 steps ahead of the device, with stability tracking on (it reads each step's
//! counts), a first step of another precision while earlier ones are unresolved, or an lr too
//! large for the smallest step number possible.
//!
//! The semantics, reports and checkpoints are those of the CPU [`GmtAdamW`](crate::GmtAdamW): the
//! same inputs give bit-identical p, m, v and master weights. One exception: with
//! `max_grad_norm`, the clipping factor comes from the GPU's sum of squares, added in another
//! order than the CPU's, so it may differ in its last bit (and between runs).
//!
//! - `launch`: the kernels, the device table of parameter tensors, and the enqueue of one step;
//! - `checks`: what a step accepts, checked before anything is enqueued;
//! - `plan`: the step counter on the device and the plans the host sends for it;
//! - `state`: copies of the state to the host, and checkpoints in the CPU engine's format;
//! - `stability`: mask-stability tracking on the device (opt-in);
//! - `sharded`: one rank of a sharded model (`CudaGmtAdamW::sharded`).

mod checks;
mod launch;
mod plan;
pub(crate) mod ranges;
mod sharded;
mod stability;
mod state;

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use half::bf16;

use super::module::cuda;
use super::pinned::Pinned;
use super::types::GmParamTensor;
use super::CudaSelector;
use crate::adamw::math::grad_multiplier;
use crate::config::kept_target;
use crate::{AdamWConfig, DType, Error, GradElem, MaskConfig, MaskMode, Precision, Result};
use crate::{StepReport, TensorTable};

/// GMT with AdamW on device buffers. See the module notes.
pub struct CudaGmtAdamW {
    stream: Arc<CudaStream>,
    selector: CudaSelector,
    kernels: launch::Kernels,
    table: TensorTable,
    adamw: AdamWConfig,
    mask: MaskConfig,
    mode: MaskMode,
    frozen: Vec<bool>,
    /// Steps taken (on the device, and on the host as of the last resolved step).
    counter: plan::StepCounter,
    /// The precision fixed by the first step taken or a loaded checkpoint (as of the last
    /// resolved step).
    precision: Option<Precision>,
    /// Whether the last enqueued step used the random mask (None before any step).
    last_random: Option<bool>,
    /// Offset of each tensor in `d_m`, `d_v` and `d_master`: table offsets rounded up to 4 entries,
    /// so that every tensor's state is 16-byte aligned. One more entry holds the padded total.
    state_offsets: Vec<u64>,
    d_m: CudaSlice<f32>,
    d_v: CudaSlice<f32>,
    /// Allocated by the first bf16-master step (or a load of such a checkpoint).
    d_master: Option<CudaSlice<f32>>,
    d_tensors: CudaSlice<GmParamTensor>,
    /// The parameter table as last uploaded (host copy).
    h_tensors: Vec<GmParamTensor>,
    /// Parameter addresses of the step being enqueued, and those the uploaded table describes.
    addresses: Vec<u64>,
    bound: Vec<u64>,
    /// Scratch for `step_raw_async`'s overlap check.
    ranges: Vec<ranges::Range>,
    /// The uploaded table is stale for another reason (frozen flags, master buffer).
    table_dirty: bool,
    /// Kept entries per group (random mask only).
    d_kept: CudaSlice<u64>,
    h_kept: Pinned<u64>,
    /// Mask-stability tracking: `None` (the default) costs nothing.
    stability: Option<stability::DeviceTracker>,
    /// The tensors' names joined by newlines (empty: unnamed), recorded in checkpoints.
    names: String,
}

impl CudaGmtAdamW {
    /// An optimizer for `table`'s tensors on `stream`: loads the kernels and allocates every buffer
    /// (m and v here, the master weights on the first bf16-master step). Rejects the configurations
    /// that [`GmtAdamW::new`](crate::GmtAdamW::new) rejects, before touching the device.
    pub fn new(
        stream: Arc<CudaStream>,
        table: TensorTable,
        adamw: AdamWConfig,
        mask: MaskConfig,
    ) -> Result<Self> {
        adamw.validate()?;
        mask.validate()?;
        let selector = CudaSelector::new(stream.clone(), &table, mask.scope)?;
        launch::new(stream, selector, table, adamw, mask)
    }

    /// [`CudaGmtAdamW::new`] on the default stream of device `ordinal`. Without a driver, a device
    /// or kernels in this build it fails with [`Error::NoDriver`], [`Error::NoDevice`] or
    /// [`Error::KernelsNotBuilt`]; a bad configuration fails first, with [`Error::InvalidConfig`].
    pub fn on_device(
        ordinal: usize,
        table: TensorTable,
        adamw: AdamWConfig,
        mask: MaskConfig,
    ) -> Result<Self> {
        adamw.validate()?;
        mask.validate()?;
        Self::new(super::default_stream(ordinal)?, table, adamw, mask)
    }

    /// Chooses GMT (the default) or the random-mask baseline at the same ratio.
    pub fn with_mask_mode(mut self, mode: MaskMode) -> Self {
        self.mode = mode;
        self
    }

    /// Fixes which tensors are frozen (HFT): their p, m and v are left untouched by every step.
    /// Their gradients still count in the selection, the norm and the non-finite check.
    pub fn set_frozen(&mut self, frozen: &[bool]) -> Result<()> {
        self.table.check_count("frozen flags", frozen.len())?;
        self.frozen.copy_from_slice(frozen);
        self.table_dirty = true;
        Ok(())
    }

    /// The stream every launch goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The table this optimizer was built for.
    pub fn table(&self) -> &TensorTable {
        &self.table
    }

    /// The selection engine; after a step its device state holds the thresholds.
    pub fn selector(&self) -> &CudaSelector {
        &self.selector
    }

    /// Waits for the stream and learns whether the last step was taken.
    pub fn synchronize(&mut self) -> Result<()> {
        self.stream.synchronize().map_err(cuda)?;
        self.resolve()
    }

    /// Steps taken so far (skipped steps do not count). Waits for the last step's count.
    pub fn step_count(&mut self) -> Result<u64> {
        self.resolve()?;
        Ok(self.counter.taken)
    }

    /// The precision fixed by the first step taken or a loaded checkpoint. Waits as `step_count`.
    pub fn precision(&mut self) -> Result<Option<Precision>> {
        self.resolve()?;
        Ok(self.precision)
    }

    /// Enqueues one step on f32 parameters with f32, bf16 or f16 gradients, at learning rate `lr`.
    /// Returns once the work is enqueued. A rejected call (bad lr, a count, length or device
    /// mismatch, another precision than the state's) enqueues nothing and changes nothing.
    pub fn step_async<G: GradElem, P: DevicePtrMut<f32>, S: DevicePtr<G>>(
        &mut self,
        params: &mut [P],
        grads: &[S],
        lr: f64,
    ) -> Result<()> {
        self.enqueue(Precision::F32, params, grads, lr, 0, false)
    }

    /// Enqueues one step on bf16 parameters with f32 master weights kept here (they start as the
    /// parameters on the first step taken); each parameter becomes its master rounded to nearest.
    pub fn step_bf16_master_async<P: DevicePtrMut<bf16>, S: DevicePtr<bf16>>(
        &mut self,
        params: &mut [P],
        grads: &[S],
        lr: f64,
    ) -> Result<()> {
        self.enqueue(Precision::Bf16Master, params, grads, lr, 0, false)
    }

    /// Enqueues one step on bf16 parameters without master weights, rounded stochastically with
    /// `rng::mix(seed ^ ROUNDING_DOMAIN, step, global index)` as on the CPU.
    pub fn step_bf16_stochastic_async<P: DevicePtrMut<bf16>, S: DevicePtr<bf16>>(
        &mut self,
        params: &mut [P],
        grads: &[S],
        lr: f64,
        seed: u64,
    ) -> Result<()> {
        self.enqueue(Precision::Bf16Stochastic, params, grads, lr, seed, false)
    }

    /// Enqueues a step on f32 parameters that reuses the last step's selection (thresholds, norm
    /// and skip flag) instead of selecting again: one launch of the fused update, 28 B per entry.
    /// `grads` must be the buffers the last step selected on (checked by address), unchanged since,
    /// for the reused thresholds to mean anything. Fails before the first step.
    pub fn step_reusing_selection_async<G: GradElem, P: DevicePtrMut<f32>, S: DevicePtr<G>>(
        &mut self,
        params: &mut [P],
        grads: &[S],
        lr: f64,
    ) -> Result<()> {
        self.enqueue(Precision::F32, params, grads, lr, 0, true)
    }

    /// Enqueues one step on buffers given as raw device addresses, for callers whose buffers are
    /// not cudarc slices they can borrow mutably (candle tensors, other frameworks). `precision`
    /// fixes the parameters' element type (f32, or bf16 for both bf16 precisions) and
    /// `grad_dtype` the gradients' (bf16 only, for bf16 parameters); `seed` is the stochastic
    /// rounding seed (unused otherwise). Same semantics, checks and report as the typed steps,
    /// except that the lengths and the device cannot be checked: that is the caller's contract.
    /// A rejected call (bad lr, another precision than the state's, a count mismatch, a null or
    /// misaligned address, a parameter buffer overlapping another buffer or ending past the
    /// address space) enqueues nothing and changes nothing.
    ///
    /// # Safety
    /// For every tensor `i` of the table, with `n = table().lengths()[i]`:
    /// - `params[i]` is the address of `n` elements of the parameter type in device memory of
    ///   this optimizer's context, and `grads[i]` that of `n` elements of `grad_dtype`;
    /// - no parameter range overlaps another parameter range or any gradient range (checked, from
    ///   the addresses and the table's lengths);
    /// - until the work enqueued here has run on [`CudaGmtAdamW::stream`], nobody frees these
    ///   buffers, writes the gradients, or reads or writes the parameters (work enqueued later on
    ///   the same stream is ordered after it; other streams must wait for it).
    pub unsafe fn step_raw_async(
        &mut self,
        precision: Precision,
        grad_dtype: DType,
        params: &[u64],
        grads: &[u64],
        lr: f64,
        seed: u64,
    ) -> Result<()> {
        // SAFETY: this function's contract.
        unsafe { self.enqueue_raw(precision, grad_dtype, params, grads, lr, seed) }
    }

    /// [`CudaGmtAdamW::step_async`], then [`CudaGmtAdamW::last_report`].
    pub fn step<G: GradElem, P: DevicePtrMut<f32>, S: DevicePtr<G>>(
        &mut self,
        params: &mut [P],
        grads: &[S],
        lr: f64,
    ) -> Result<StepReport> {
        self.step_async(params, grads, lr)?;
        self.last_report()
    }

    /// [`CudaGmtAdamW::step_bf16_master_async`], then [`CudaGmtAdamW::last_report`].
    pub fn step_bf16_master<P: DevicePtrMut<bf16>, S: DevicePtr<bf16>>(
        &mut self,
        params: &mut [P],
        grads: &[S],
        lr: f64,
    ) -> Result<StepReport> {
        self.step_bf16_master_async(params, grads, lr)?;
        self.last_report()
    }

    /// [`CudaGmtAdamW::step_bf16_stochastic_async`], then [`CudaGmtAdamW::last_report`].
    pub fn step_bf16_stochastic<P: DevicePtrMut<bf16>, S: DevicePtr<bf16>>(
        &mut self,
        params: &mut [P],
        grads: &[S],
        lr: f64,
        seed: u64,
    ) -> Result<StepReport> {
        self.step_bf16_stochastic_async(params, grads, lr, seed)?;
        self.last_report()
    }

    /// Waits for the stream and returns the last enqueued step's report, the same fields as the
    /// CPU engine's (the norm within f64 rounding: the GPU adds the squares in another order).
    pub fn last_report(&mut self) -> Result<StepReport> {
        let random = self.last_random.ok_or(Error::InvalidConfig {
            name: "last_report before a step",
            value: 0.0,
            expected: "enqueue a step first",
        })?;
        self.selector.copy_stats_async()?;
        if random {
            self.h_kept.download(&self.stream, &self.d_kept)?;
        }
        let selection = self.selector.stats()?; // synchronizes the stream
        self.resolve()?;
        let mut groups = selection.groups;
        if random {
            let kept = self.h_kept.read()?;
            for (stats, &kept) in groups.iter_mut().zip(kept) {
                stats.target = kept_target(stats.len, self.mask.mask_ratio);
                stats.kept = kept;
                stats.threshold_key = 0;
                stats.threshold = f32::NAN;
            }
        }
        Ok(StepReport {
            skipped: selection.non_finite > 0,
            step: self.counter.taken,
            groups,
            grad_norm: grad_multiplier(&self.adamw, selection.sum_sq).1,
        })
    }

    /// Learns how many of the steps enqueued since the last resolution were taken, waiting for
    /// the last one's count (and so its plan pick) only.
    fn resolve(&mut self) -> Result<()> {
        let resolved = self.counter.wait()?;
        self.apply(resolved)
    }

    /// [`CudaGmtAdamW::resolve`] if the count has landed; never waits.
    fn poll(&mut self) -> Result<()> {
        let resolved = self.counter.poll()?;
        self.apply(resolved)
    }

    fn apply(&mut self, resolved: Option<plan::Resolved>) -> Result<()> {
        if let Some(r) = resolved {
            let taken = r.taken > r.before;
            if taken {
                self.precision = Some(r.precision);
            }
            // With tracking on, every step resolves the one before (`settle`): one step here.
            if let Some(tracker) = &mut self.stability {
                tracker.resolve(taken, r.taken)?;
            }
        }
        Ok(())
    }
}

impl Drop for CudaGmtAdamW {
    fn drop(&mut self) {
        // The kernels' module is unloaded right after: let the enqueued work finish first.
        let _ = self.stream.synchronize();
    }
}
