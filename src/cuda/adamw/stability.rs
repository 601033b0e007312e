//! Mask stability on the device (the CPU engine's [`MaskStability`], the same counts).
//!
//! Off by default, and then free: no buffer exists and no kernel is launched. When on
//! ([`CudaGmtAdamW::track_stability`]), every step enqueues `gm_stability_*` (kernels/adamw.cu)
//! after the update, over the same work list and with the same arguments, so it re-decides each
//! entry with the update's own rule. It keeps one bit per entry on the device (the mask of the last
//! step taken; each chunk's bits padded to `GPU_CHUNK_LEN`) and adds, per tensor, the kept entries
//! and those also kept before. The counts come back with one asynchronous copy, read when the step
//! is resolved. The one cost beyond the kernel: with tracking on, each step resolves the one
//! before it first (it waits for that step's count, which the device has usually long finished),
//! since the copy holds one step's counts; untracked steps never wait (`plan.rs`).
//!
//! Sharded, each rank counts its own slices, as the CPU engine's sharded ranks do: the counts
//! added over the ranks are the whole tensors' (no collective is spent on them).
//!
//! As on the CPU: a skipped step changes neither the bits nor [`CudaGmtAdamW::stability`]; the
//! first step taken after `track_stability(true)` or a checkpoint load has no previous mask.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};

use super::CudaGmtAdamW;
use crate::cuda::module::{cuda, Function};
use crate::cuda::pinned::Pinned;
use crate::cuda::types::GmStepPlan;
use crate::cuda::CudaSelector;
use crate::tuning::GPU_CHUNK_LEN;
use crate::{DType, MaskStability, Result, TensorStability};

/// The tracker's device buffers and the last result.
pub(super) struct DeviceTracker {
    /// Per work-list chunk, `GPU_CHUNK_LEN / 32` words of the last mask taken.
    d_bits: CudaSlice<u32>,
    /// Per tensor, (kept, kept before) of the step being enqueued.
    d_counts: CudaSlice<u64>,
    h_counts: Pinned<u64>,
    /// The last enqueued step was tracked and its counts are not read yet.
    pending: bool,
    /// Whether `result` holds a step (and so the bits a previous mask).
    recorded: bool,
    result: MaskStability,
}

impl DeviceTracker {
    fn new(stream: &Arc<CudaStream>, n_chunks: usize, n_tensors: usize) -> Result<Self> {
        let words = n_chunks * (GPU_CHUNK_LEN / 32);
        Ok(DeviceTracker {
            d_bits: stream.alloc_zeros(words.max(1)).map_err(cuda)?,
            d_counts: stream.alloc_zeros((2 * n_tensors).max(1)).map_err(cuda)?,
            h_counts: Pinned::new(stream, 2 * n_tensors)?,
            pending: false,
            recorded: false,
            result: MaskStability {
                step: 0,
                has_previous: false,
                tensors: vec![TensorStability::default(); n_tensors],
            },
        })
    }

    /// Enqueues the stability pass of the step just enqueued (after its update) and the copy of
    /// its counts.
    ///
    /// # Safety
    /// The selector's work list and `d_tensors` describe live gradient buffers of `dtype` that
    /// nobody writes or frees until the kernel has run (the update's own contract).
    pub(super) unsafe fn enqueue(
        &mut self,
        stream: &Arc<CudaStream>,
        kernel: &Function,
        selector: &CudaSelector,
        d_tensors: &CudaSlice<crate::cuda::types::GmParamTensor>,
        d_plan: &CudaSlice<GmStepPlan>,
        n_chunks: usize,
    ) -> Result<()> {
        stream.memset_zeros(&mut self.d_counts).map_err(cuda)?;
        {
            let (d_chunks, _chunks_read) = selector.device_chunks().device_ptr(stream);
            let (d_grads, _grads_read) = selector.device_grads().device_ptr(stream);
            let (d_groups, _groups_read) = selector.device_groups().device_ptr(stream);
            let (d_step, _step_read) = selector.device_step().device_ptr(stream);
            let (d_tensors, _tensors_read) = d_tensors.device_ptr(stream);
            let (d_bits, _bits_written) = self.d_bits.device_ptr_mut(stream);
            let (d_counts, _counts_written) = self.d_counts.device_ptr_mut(stream);
            let (d_plan, _plan_read) = d_plan.device_ptr(stream);
            let mut ptrs = [
                d_chunks, d_grads, d_tensors, d_groups, d_step, d_bits, d_counts, d_plan,
            ];
            let mut params = ptrs.each_mut().map(|p| p as *mut u64 as *mut c_void);
            // SAFETY: the argument array matches gm_stability_*'s parameter list in
            // kernels/adamw.cu; d_bits holds GPU_CHUNK_LEN / 32 words per chunk of the work list
            // and d_counts two per tensor (both sized for this table in `new`); the rest is this
            // function's contract.
            unsafe { kernel.launch(stream.cu_stream(), (n_chunks as u32, 1, 1), &mut params)? };
        }
        self.h_counts.download(stream, &self.d_counts)?;
        self.pending = true;
        Ok(())
    }

    /// Called when the last enqueued step is resolved: reads its counts if it was tracked and taken
    /// (as step `step`).
    pub(super) fn resolve(&mut self, taken: bool, step: u64) -> Result<()> {
        if !std::mem::take(&mut self.pending) || !taken {
            return Ok(());
        }
        let counts = self.h_counts.read()?;
        let has_previous = self.recorded;
        for (t, out) in self.result.tensors.iter_mut().enumerate() {
            *out = TensorStability {
                kept: counts[2 * t],
                kept_before: if has_previous { counts[2 * t + 1] } else { 0 },
            };
        }
        self.result.step = step;
        self.result.has_previous = has_previous;
        self.recorded = true;
        Ok(())
    }

    /// Forgets the last mask (after a checkpoint load, which does not hold it).
    pub(super) fn forget(&mut self) {
        self.pending = false;
        self.recorded = false;
    }
}

/// Which `gm_stability_*` entry point serves a gradient dtype.
pub(super) fn kernel_index(dtype: DType) -> usize {
    match dtype {
        DType::F32 => 0,
        DType::BF16 => 1,
        DType::F16 => 2,
    }
}

impl CudaGmtAdamW {
    /// Turns mask-stability tracking on or off (see [`MaskStability`]). On allocates one bit per
    /// entry on the device (about `n / 8` bytes) and makes every step launch one more kernel that
    /// reads the gradients again; off frees it and costs nothing. Turning it on starts without a
    /// previous mask; turning it on again while on changes nothing.
    pub fn track_stability(&mut self, on: bool) -> Result<()> {
        self.resolve()?;
        if !on {
            self.stability = None;
        } else if self.stability.is_none() {
            let n_chunks = self.n_chunks();
            self.stability = Some(DeviceTracker::new(
                &self.stream,
                n_chunks,
                self.table.len(),
            )?);
        }
        Ok(())
    }

    /// The mask stability of the last step taken, when tracking is on and a tracked step has been
    /// taken (`None` otherwise). Waits for the last step's counts, as [`CudaGmtAdamW::step_count`]
    /// waits for the step count. With tracking on, each step waits for the previous step's count
    /// before it is enqueued (the counts are read per step).
    pub fn stability(&mut self) -> Result<Option<&MaskStability>> {
        self.resolve()?;
        Ok(self
            .stability
            .as_ref()
            .and_then(|t| t.recorded.then_some(&t.result)))
    }
}
