//! The optimizer's kernels, its device table of parameter tensors, and the enqueue of one step.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut};

use super::plan::StepCounter;
use super::ranges::first_overlap;
use super::CudaGmtAdamW;
use crate::adamw::math::{grad_multiplier, StepScalars};
use crate::cuda::module::{cuda, Function, Module};
use crate::cuda::pinned::Pinned;
use crate::cuda::types::{GmAdamWArgs, GmParamTensor, GmStepPlan, KEEP_RANDOM, KEEP_THRESHOLD};
use crate::cuda::{check_addresses, CudaSelector};
use crate::rng::{random_cut, stream as rng_stream, ROUNDING_DOMAIN};
use crate::{AdamWConfig, DType, Error, GradElem, GroupMap, MaskConfig, MaskMode, MaskedUpdate};
use crate::{Precision, Result, TensorTable};

/// The entry points of `kernels/adamw.cu`, indexed by [`kernel_index`].
pub(super) struct Kernels {
    _module: Module,
    update: [Function; 5],
    /// `gm_stability_*`, indexed by [`super::stability::kernel_index`].
    pub(super) stability: [Function; 3],
    /// `gm_step_plan`: picks the step's plan by the device's step count (`plan.rs`).
    plan: Function,
}

/// Which entry point serves a precision and a gradient dtype (the signatures of the public step
/// functions only allow these pairs).
fn kernel_index(precision: Precision, dtype: DType) -> usize {
    match (precision, dtype) {
        (Precision::F32, DType::F32) => 0,
        (Precision::F32, DType::BF16) => 1,
        (Precision::F32, DType::F16) => 2,
        (Precision::Bf16Master, _) => 3,
        (Precision::Bf16Stochastic, _) => 4,
    }
}

/// Builds the optimizer around `selector` (one for `table` and `mask.scope` on `stream`, sharded or
/// not): kernels, state and staging buffers (configs already checked). The state holds this
/// rank's slices only (the whole tensors, unsharded).
pub(super) fn new(
    stream: Arc<CudaStream>,
    selector: CudaSelector,
    table: TensorTable,
    adamw: AdamWConfig,
    mask: MaskConfig,
) -> Result<CudaGmtAdamW> {
    let ctx = stream.context().clone();
    let module = Module::load(&ctx, "adamw")?;
    let kernels = Kernels {
        update: [
            module.function("gm_adamw_f32_f32")?,
            module.function("gm_adamw_f32_bf16")?,
            module.function("gm_adamw_f32_f16")?,
            module.function("gm_adamw_master_bf16")?,
            module.function("gm_adamw_round_bf16")?,
        ],
        stability: [
            module.function("gm_stability_f32")?,
            module.function("gm_stability_bf16")?,
            module.function("gm_stability_f16")?,
        ],
        plan: module.function("gm_step_plan")?,
        _module: module,
    };
    let mut state_offsets = vec![0u64];
    for &len in selector.local_table().lengths() {
        let end = state_offsets.last().unwrap() + len as u64;
        state_offsets.push(end.next_multiple_of(4));
    }
    let padded = *state_offsets.last().unwrap() as usize;
    let map = GroupMap::new(&table, mask.scope);
    let (n, n_groups) = (table.len(), map.n_groups());
    let d_m = stream.alloc_zeros::<f32>(padded.max(1)).map_err(cuda)?;
    let d_v = stream.alloc_zeros::<f32>(padded.max(1)).map_err(cuda)?;
    let d_tensors = stream
        .alloc_zeros::<GmParamTensor>(n.max(1))
        .map_err(cuda)?;
    let d_kept = stream.alloc_zeros::<u64>(n_groups.max(1)).map_err(cuda)?;
    let (h_kept, counter) = (Pinned::new(&stream, n_groups)?, StepCounter::new(&stream)?);
    Ok(CudaGmtAdamW {
        stream,
        selector,
        kernels,
        frozen: vec![false; n],
        counter,
        precision: None,
        last_random: None,
        state_offsets,
        d_m,
        d_v,
        d_master: None,
        d_tensors,
        h_tensors: vec![GmParamTensor::default(); n],
        addresses: vec![0; n],
        bound: vec![0; n],
        ranges: Vec::with_capacity(n),
        table_dirty: true,
        d_kept,
        h_kept,
        stability: None,
        names: String::new(),
        table,
        adamw,
        mask,
        mode: MaskMode::Gmt,
    })
}

impl CudaGmtAdamW {
    /// Checks a step's inputs, then enqueues the selection (unless `reuse_selection`), the plan
    /// pick and the update. `seed` is the stochastic-rounding seed.
    pub(super) fn enqueue<G: GradElem, T, P: DevicePtrMut<T>, S: DevicePtr<G>>(
        &mut self,
        precision: Precision,
        params: &mut [P],
        grads: &[S],
        lr: f64,
        seed: u64,
        reuse_selection: bool,
    ) -> Result<()> {
        self.settle(precision, lr)?;
        self.check(params, grads)?;
        if reuse_selection {
            let addresses = grads.iter().map(|g| g.device_ptr(&self.stream).0);
            if self.last_random.is_none() || !self.selector.is_bound_to(addresses, G::DTYPE) {
                return Err(Error::InvalidConfig {
                    name: "step_reusing_selection_async gradients",
                    value: 0.0,
                    expected: "the gradient buffers of the last step, after at least one step",
                });
            }
        }
        self.prepare(precision)?;
        if !reuse_selection {
            let ratio = self.selection_ratio();
            self.selector.select(grads, ratio)?;
        }
        for (address, param) in self.addresses.iter_mut().zip(params.iter_mut()) {
            // The guard makes our stream wait for earlier users of the buffer; the write itself is
            // recorded again after the launch below.
            *address = param.device_ptr_mut(&self.stream).0;
        }
        // SAFETY: `check` matched every buffer to the table's lengths and this device; the
        // parameter and gradient buffers are borrowed until this call returns, and their use by
        // the kernel is recorded below so that cudarc orders later users after it.
        unsafe { self.enqueue_update(precision, G::DTYPE, lr, seed)? };
        for param in params.iter_mut() {
            drop(param.device_ptr_mut(&self.stream));
        }
        for grad in grads {
            drop(grad.device_ptr(&self.stream));
        }
        Ok(())
    }

    /// [`CudaGmtAdamW::enqueue`] on raw device addresses: checks what can be checked (lr,
    /// precision, gradient dtype, counts, alignment), then selects and updates.
    ///
    /// # Safety
    /// The contract of [`CudaGmtAdamW::step_raw_async`].
    pub(super) unsafe fn enqueue_raw(
        &mut self,
        precision: Precision,
        dtype: DType,
        params: &[u64],
        grads: &[u64],
        lr: f64,
        seed: u64,
    ) -> Result<()> {
        self.settle(precision, lr)?;
        if precision != Precision::F32 && dtype != DType::BF16 {
            return Err(Error::InvalidConfig {
                name: "gradient dtype",
                value: dtype.size() as f64,
                expected: "bf16 gradients for bf16 parameters (the value is the element size)",
            });
        }
        let param_size = if precision == Precision::F32 { 4 } else { 2 };
        for (what, addresses, size) in [
            ("parameter", params, param_size),
            ("gradient", grads, dtype.size()),
        ] {
            self.table.check_count(what, addresses.len())?;
            check_addresses(addresses, self.selector.local_table().lengths(), size)?;
        }
        let sizes = (param_size, dtype.size());
        let lengths = self.selector.local_table().lengths();
        if let Some(tensor) = first_overlap(params, grads, lengths, sizes, &mut self.ranges) {
            return Err(Error::InvalidConfig {
                name: "device address",
                value: tensor as f64,
                expected: "parameter buffers that overlap no other parameter or gradient buffer (the value is a tensor index)",
            });
        }
        self.prepare(precision)?;
        let ratio = self.selection_ratio();
        // SAFETY: the caller's contract covers the gradients' addresses, lengths and lifetimes; the
        // count and the addresses were checked above against the selector's local lengths.
        unsafe { self.selector.select_checked(dtype, grads, ratio)? };
        self.addresses.copy_from_slice(params);
        // SAFETY: the caller's contract covers the parameters' addresses, lengths and lifetimes.
        unsafe { self.enqueue_update(precision, dtype, lr, seed) }
    }

    /// The ratio the selection runs at: the mask ratio for GMT, 0 (pass 1 only: the norm and the
    /// non-finite count) for the random mask.
    fn selection_ratio(&self) -> f64 {
        if self.mode == MaskMode::Gmt {
            self.mask.mask_ratio
        } else {
            0.0
        }
    }

    /// Allocates the master weights on the first bf16-master step.
    fn prepare(&mut self, precision: Precision) -> Result<()> {
        if precision == Precision::Bf16Master && self.d_master.is_none() {
            let padded = *self.state_offsets.last().unwrap() as usize;
            self.d_master = Some(self.stream.alloc_zeros(padded.max(1)).map_err(cuda)?);
            self.table_dirty = true;
        }
        Ok(())
    }

    /// Enqueues the plan pick and the update for the parameters at `self.addresses` after the
    /// selection just enqueued.
    ///
    /// # Safety
    /// `self.addresses` and the selector's bound gradients are live buffers of the table's
    /// lengths on this device (parameters of `precision`'s element type, gradients of `dtype`),
    /// which nobody else writes or frees until the kernel has run.
    unsafe fn enqueue_update(
        &mut self,
        precision: Precision,
        dtype: DType,
        lr: f64,
        seed: u64,
    ) -> Result<()> {
        let random = matches!(self.mode, MaskMode::Random { .. }) && self.mask.mask_ratio > 0.0;
        if self.table_dirty || self.bound != self.addresses {
            self.upload_param_table()?;
        }
        if random {
            self.stream.memset_zeros(&mut self.d_kept).map_err(cuda)?;
        }

        let clip = self.adamw.max_grad_norm.is_some();
        // With clipping, the kernel replaces grad_mul with the value from the device's sum of squares.
        let grad_mul = grad_multiplier(&self.adamw, 0.0).0;
        let args = GmAdamWArgs {
            random_key: 0,
            random_cut: random_cut(self.mask.mask_ratio),
            round_key: 0,
            max_grad_norm: self.adamw.max_grad_norm.unwrap_or(0.0),
            grad_scale: self.adamw.grad_scale.unwrap_or(1.0),
            keep_rule: if random { KEEP_RANDOM } else { KEEP_THRESHOLD },
            freeze: u32::from(self.mask.masked == MaskedUpdate::Freeze),
            clip: u32::from(clip),
            init_master: 0,
        };
        // The master weights start as the parameters at the first step taken: if none of the
        // unresolved steps was (candidate 0), and the state has no bf16-master step yet.
        let init = precision == Precision::Bf16Master && self.precision != Some(precision);
        let (adamw, mode) = (self.adamw, self.mode);
        // Step t's plan, as the CPU engine computes step t.
        let plan = |t: u64, candidate: u64| GmStepPlan {
            scalars: StepScalars::new(&adamw, t, lr, grad_mul),
            missed: 0,
            args: GmAdamWArgs {
                random_key: match mode {
                    MaskMode::Random { seed } => rng_stream(seed, t),
                    MaskMode::Gmt => 0,
                },
                round_key: rng_stream(seed ^ ROUNDING_DOMAIN, t),
                init_master: u32::from(init && candidate == 0),
                ..args
            },
        };
        let d_step = self.selector.device_step();
        let kernel = &self.kernels.plan;
        self.counter
            .enqueue(&self.stream, kernel, d_step, precision, plan)?;
        let n_chunks = self.n_chunks();
        // SAFETY: this function's contract.
        unsafe { self.launch(kernel_index(precision, dtype), n_chunks)? };
        if random {
            // Sharded: every rank's kept entries, added (the report's counts are the whole
            // tensors'). Unsharded: nothing.
            let groups = self.selector.n_groups();
            self.selector
                .shard_all_reduce_u64(&mut self.d_kept, groups)?;
        }
        if let Some(tracker) = &mut self.stability {
            let kernel = &self.kernels.stability[super::stability::kernel_index(dtype)];
            // SAFETY: the update's contract (this function's) covers the same gradient buffers.
            unsafe {
                tracker.enqueue(
                    &self.stream,
                    kernel,
                    &self.selector,
                    &self.d_tensors,
                    self.counter.current(),
                    n_chunks,
                )?
            };
        }
        self.last_random = Some(random);
        Ok(())
    }

    /// Chunks in the selector's work list (one block each).
    pub(super) fn n_chunks(&self) -> usize {
        self.selector.n_chunks
    }

    /// Fills the parameter table for `addresses` and enqueues its upload: n_tensors x 48 B from
    /// pageable memory, which the driver stages at once, so the host waits for nothing.
    fn upload_param_table(&mut self) -> Result<()> {
        if !self.table.is_empty() {
            let m = self.d_m.device_ptr(&self.stream).0;
            let v = self.d_v.device_ptr(&self.stream).0;
            let master = self.d_master.as_ref().map(|d| d.device_ptr(&self.stream).0);
            let layout = self.selector.shard_layout();
            for (t, slot) in self.h_tensors.iter_mut().enumerate() {
                let at = self.state_offsets[t] * 4;
                *slot = GmParamTensor {
                    d_param: self.addresses[t],
                    d_m: m + at,
                    d_v: v + at,
                    d_master: master.map_or(0, |d| d + at),
                    // Global index of this rank's slice's first entry (the random mask and the
                    // stochastic rounding draw by it).
                    first: self.table.offsets()[t]
                        + layout.map_or(0, |l| l.local_range(t).start as u64),
                    frozen: u32::from(self.frozen[t]),
                    pad: 0,
                };
            }
            self.stream
                .memcpy_htod(&self.h_tensors, &mut self.d_tensors)
                .map_err(cuda)?;
        }
        self.bound.copy_from_slice(&self.addresses);
        self.table_dirty = false;
        Ok(())
    }

    /// Enqueues the update kernel over the selector's work list (`n_chunks` blocks).
    ///
    /// # Safety
    /// The uploaded parameter table and the selector's work list describe live buffers of the
    /// table's lengths on this device (parameters of the element type of `kernel`'s precision,
    /// gradients of its dtype), which nobody else writes or frees until the kernel has run.
    unsafe fn launch(&mut self, kernel: usize, n_chunks: usize) -> Result<()> {
        self.stream.context().bind_to_thread().map_err(cuda)?;
        let stream = &self.stream;
        // The guards record, when dropped after the launch, what the kernel read and wrote.
        let (d_chunks, _chunks_read) = self.selector.device_chunks().device_ptr(stream);
        let (d_grads, _grads_read) = self.selector.device_grads().device_ptr(stream);
        let (d_groups, _groups_read) = self.selector.device_groups().device_ptr(stream);
        let (d_step, _step_read) = self.selector.device_step().device_ptr(stream);
        let (d_tensors, _tensors_read) = self.d_tensors.device_ptr(stream);
        let (d_kept, _kept_written) = self.d_kept.device_ptr_mut(stream);
        let (d_plan, _plan_read) = self.counter.current().device_ptr(stream);
        let _m_written = self.d_m.device_ptr_mut(stream).1;
        let _v_written = self.d_v.device_ptr_mut(stream).1;
        let _master_written = self.d_master.as_mut().map(|d| d.device_ptr_mut(stream).1);
        let mut ptrs = [
            d_chunks, d_grads, d_tensors, d_groups, d_step, d_kept, d_plan,
        ];
        let mut params = ptrs.each_mut().map(|p| p as *mut u64 as *mut c_void);
        // SAFETY: the argument array matches gm_adamw_*'s parameter list in kernels/adamw.cu (seven
        // device addresses; the plan has GmStepPlan's layout, asserted in types.rs); the workspace
        // buffers are owned by `self` and sized for this table; the rest is this function's
        // contract.
        unsafe {
            self.kernels.update[kernel].launch(
                stream.cu_stream(),
                (n_chunks as u32, 1, 1),
                &mut params,
            )
        }
    }
}
