//! `CudaSelector`: the exact per-group threshold on the GPU (`kernels/select.cu`), on the caller's
//! stream, with every buffer sized in `new`. A step enqueues 3 to 5 launches and returns at once;
//! the thresholds stay on the device ([`CudaSelector::device_groups`]) for the optimizer kernels,
//! and the stats reach the host only when asked ([`CudaSelector::copy_stats_async`] then
//! [`CudaSelector::stats`]).

use std::ops::Range;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};

use super::launch::{Launches, REFINE_COMPACT, REFINE_SKIP_CANDIDATES};
use super::module::{cuda, Function, Module};
use super::pinned::Pinned;
use super::types::{GmChunk, GmGroup, GmStep};
use crate::config::validate_ratio;
use crate::select::{GroupStats, Selection};
use crate::table::{GroupMap, TensorTable};
use crate::tuning::{FIRST_DIGIT_BINS, GPU_CHUNK_LEN, MAX_CUDA_CANDIDATES};
use crate::work::{runs, whole_tensors};
use crate::{DType, Error, GradElem, Result, Scope};

pub(super) struct Kernels {
    _module: Module,
    pub begin: Function,
    histogram: [Function; 3],
    refine: [Function; 3],
    candidates: Function,
}

pub(super) fn dtype_index(dtype: DType) -> usize {
    match dtype {
        DType::F32 => 0,
        DType::BF16 => 1,
        DType::F16 => 2,
    }
}

/// The CUDA selection engine for one table and scope, bound to one stream.
pub struct CudaSelector {
    pub(super) stream: Arc<CudaStream>,
    pub(super) kernels: Kernels,
    table: TensorTable,
    /// This rank's slices as a table (the table itself, unsharded): the buffers `select` takes.
    local: TensorTable,
    pub(super) map: GroupMap,
    /// Chunks in the work list (one block each).
    pub(super) n_chunks: usize,
    /// The layout, collective and kernels of a sharded selector.
    pub(super) shard: Option<Box<super::shard::CudaShards>>,
    /// The gradient buffers of the step being enqueued, and those the uploaded table holds.
    addresses: Vec<u64>,
    bound: Vec<u64>,
    /// The work list, uploaded once; it holds no address (see [`GmChunk`]).
    pub(super) d_chunks: CudaSlice<GmChunk>,
    /// The gradient table: one device address per tensor, uploaded when a buffer moves.
    pub(super) d_grads: CudaSlice<u64>,
    pub(super) d_groups: CudaSlice<GmGroup>,
    /// Per group, a first-digit histogram; sharded, then each group's non-finite count and the
    /// step's (the all-reduced tail).
    pub(super) d_hist: CudaSlice<u64>,
    pub(super) d_step: CudaSlice<GmStep>,
    pub(super) d_cand: CudaSlice<u32>,
    h_groups: Pinned<GmGroup>,
    h_step: Pinned<GmStep>,
    last_dtype: Option<DType>,
    /// The dtype of the selection whose stats `copy_stats_async` copied.
    copied_dtype: Option<DType>,
}

impl CudaSelector {
    /// Loads the kernels and sizes every device buffer for `table` under `scope`. The candidate
    /// buffer holds 1/32 of the entries (at least 64K keys, at most [`MAX_CUDA_CANDIDATES`]).
    pub fn new(stream: Arc<CudaStream>, table: &TensorTable, scope: Scope) -> Result<Self> {
        let capacity = (table.total_len() / 32).clamp(1 << 16, MAX_CUDA_CANDIDATES) as usize;
        Self::with_candidate_capacity(stream, table, scope, capacity)
    }

    /// Like `new`, with a candidate buffer of `capacity` keys. A group whose bucket does not fit
    /// re-reads its gradients for the last digit (exact, slower). Rejects a capacity above
    /// [`MAX_CUDA_CANDIDATES`] (the kernels' per-block counts are u32) before touching the device.
    pub fn with_candidate_capacity(
        stream: Arc<CudaStream>,
        table: &TensorTable,
        scope: Scope,
        capacity: usize,
    ) -> Result<Self> {
        Self::build(stream, table, scope, capacity, &whole_tensors(table), 0)
    }

    /// Sizes every buffer for this rank's slices `local` of `table`'s tensors; `tail` more words
    /// after the histograms (sharded: the non-finite counts that are all-reduced with them).
    pub(super) fn build(
        stream: Arc<CudaStream>,
        table: &TensorTable,
        scope: Scope,
        capacity: usize,
        local: &[Range<usize>],
        tail: usize,
    ) -> Result<Self> {
        if capacity as u64 > MAX_CUDA_CANDIDATES {
            return Err(Error::TooLarge(
                "a CUDA candidate buffer above MAX_CUDA_CANDIDATES keys",
            ));
        }
        let ctx = stream.context().clone();
        let module = Module::load(&ctx, "select")?;
        let kernels = Kernels {
            begin: module.function("gm_select_begin")?,
            histogram: [
                module.function("gm_histogram_f32")?,
                module.function("gm_histogram_bf16")?,
                module.function("gm_histogram_f16")?,
            ],
            refine: [
                module.function("gm_refine_f32")?,
                module.function("gm_refine_bf16")?,
                module.function("gm_refine_f16")?,
            ],
            candidates: module.function("gm_refine_candidates")?,
            _module: module,
        };
        let map = GroupMap::new(table, scope);
        let mut chunks = Vec::new();
        let mut groups = vec![GmGroup::default(); map.n_groups()];
        for run in runs(table, local, GPU_CHUNK_LEN) {
            let (group, dense) = (map.group_of[run.tensor], table.dense()[run.tensor]);
            chunks.push(GmChunk {
                start: run.start as u64,
                first: run.global,
                len: run.len as u32,
                group,
                dense: u32::from(dense),
                tensor: run.tensor as u32,
            });
            if !dense {
                groups[group as usize].n_chunks += 1;
            }
        }
        let lengths: Vec<usize> = local.iter().map(|r| r.len()).collect();
        let local = TensorTable::new(&lengths, table.group_ids())?.with_dense(table.dense())?;
        for (g, group) in groups.iter_mut().enumerate() {
            group.len = map.group_len[g];
        }
        super::check_grid(chunks.len(), groups.len())?;
        let mut d_chunks = stream
            .alloc_zeros::<GmChunk>(chunks.len().max(1))
            .map_err(cuda)?;
        if !chunks.is_empty() {
            stream.memcpy_htod(&chunks, &mut d_chunks).map_err(cuda)?;
        }
        let d_grads = stream
            .alloc_zeros::<u64>(table.len().max(1))
            .map_err(cuda)?;
        let mut d_groups = stream
            .alloc_zeros::<GmGroup>(groups.len().max(1))
            .map_err(cuda)?;
        if !groups.is_empty() {
            stream.memcpy_htod(&groups, &mut d_groups).map_err(cuda)?;
        }
        let d_hist = stream
            .alloc_zeros::<u64>(groups.len().max(1) * FIRST_DIGIT_BINS + tail)
            .map_err(cuda)?;
        let mut d_step = stream.alloc_zeros::<GmStep>(1).map_err(cuda)?;
        stream
            .memcpy_htod(
                &[GmStep {
                    cand_cap: capacity as u64,
                    ..GmStep::default()
                }],
                &mut d_step,
            )
            .map_err(cuda)?;
        let d_cand = stream.alloc_zeros::<u32>(capacity.max(1)).map_err(cuda)?;
        let (h_groups, h_step) = (
            Pinned::new(&stream, groups.len())?,
            Pinned::new(&stream, 1)?,
        );
        Ok(CudaSelector {
            stream,
            kernels,
            table: table.clone(),
            local,
            shard: None,
            addresses: vec![0; table.len()],
            // No buffer is 0 but an empty tensor's (never read): the first step uploads.
            bound: vec![u64::MAX; table.len()],
            map,
            n_chunks: chunks.len(),
            d_chunks,
            d_grads,
            d_groups,
            d_hist,
            d_step,
            d_cand,
            h_groups,
            h_step,
            last_dtype: None,
            copied_dtype: None,
        })
    }

    /// The stream every launch goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The table this selector was built for.
    pub fn table(&self) -> &TensorTable {
        &self.table
    }

    /// This rank's slices as a table (the table itself, unsharded): what `select` takes.
    pub fn local_table(&self) -> &TensorTable {
        &self.local
    }

    /// Number of selection groups.
    pub fn n_groups(&self) -> usize {
        self.map.n_groups()
    }

    /// The per-group device state; after a step, `threshold_key` and `kept` hold the result.
    pub fn device_groups(&self) -> &CudaSlice<GmGroup> {
        &self.d_groups
    }

    /// The step totals on the device (`non_finite > 0` means the optimizer step must be skipped).
    pub fn device_step(&self) -> &CudaSlice<GmStep> {
        &self.d_step
    }

    /// The uploaded work list.
    pub fn device_chunks(&self) -> &CudaSlice<GmChunk> {
        &self.d_chunks
    }

    /// The gradient table: the device address of each tensor's gradients at the last selection
    /// (the work list's chunks index it).
    pub fn device_grads(&self) -> &CudaSlice<u64> {
        &self.d_grads
    }

    /// Whether the gradient table holds gradients at `addresses` of `dtype` (the last selection's
    /// buffers), so that a kernel walking the work list reads those gradients.
    pub(crate) fn is_bound_to(&self, addresses: impl Iterator<Item = u64>, dtype: DType) -> bool {
        self.last_dtype == Some(dtype) && self.bound.iter().copied().eq(addresses)
    }

    /// Enqueues the selection of `grads` (one buffer per tensor, in table order, on this
    /// selector's device) at `mask_ratio`. Returns once the work is enqueued: no host sync.
    /// Rejects a bad ratio, a count or length mismatch and a buffer on another device before
    /// enqueuing anything.
    pub fn select<T: GradElem, S: DevicePtr<T>>(
        &mut self,
        grads: &[S],
        mask_ratio: f64,
    ) -> Result<()> {
        validate_ratio(mask_ratio)?;
        self.local
            .check_lengths("gradients", grads.iter().map(|g| g.len()))?;
        let ordinal = self.stream.context().ordinal();
        for (tensor, grad) in grads.iter().enumerate() {
            let got = grad.stream().context().ordinal();
            if got != ordinal {
                return Err(Error::WrongDevice {
                    tensor,
                    expected: ordinal,
                    got,
                });
            }
        }
        for (address, grad) in self.addresses.iter_mut().zip(grads) {
            // The guard makes our stream wait for earlier writes to the buffer; dropping it at
            // once is fine because the reads are recorded again after the launches below.
            let (ptr, _guard) = grad.device_ptr(&self.stream);
            *address = ptr;
        }
        // SAFETY: every address comes from a live buffer of the table's length on this device,
        // and the buffers are borrowed until this call returns; the kernels read them in stream
        // order, and the read is recorded below so that cudarc orders later writers after it.
        unsafe { self.enqueue(T::DTYPE, mask_ratio)? };
        for grad in grads {
            drop(grad.device_ptr(&self.stream));
        }
        Ok(())
    }

    /// Enqueues the selection of gradients given as raw device addresses. A null address (for a
    /// non-empty tensor) or one not aligned to the element size is rejected.
    ///
    /// # Safety
    /// For every tensor `i`, `addresses[i]` must be the address of `lengths[i]` valid elements of
    /// `dtype` in device memory of this selector's context, and nobody may write them (or free
    /// them) until the work enqueued here has run on the stream.
    pub unsafe fn select_raw(
        &mut self,
        dtype: DType,
        addresses: &[u64],
        lengths: &[usize],
        mask_ratio: f64,
    ) -> Result<()> {
        validate_ratio(mask_ratio)?;
        if addresses.len() != lengths.len() {
            return Err(Error::CountMismatch {
                what: "addresses",
                expected: lengths.len(),
                got: addresses.len(),
            });
        }
        self.local
            .check_lengths("gradients", lengths.iter().copied())?;
        super::check_addresses(addresses, lengths, dtype.size())?;
        // SAFETY: the caller's contract above.
        unsafe { self.select_checked(dtype, addresses, mask_ratio) }
    }

    /// [`CudaSelector::select_raw`] once the caller has checked the ratio, the count and the
    /// addresses against [`CudaSelector::local_table`]'s lengths.
    ///
    /// # Safety
    /// [`CudaSelector::select_raw`]'s contract, with this selector's local lengths.
    pub(crate) unsafe fn select_checked(
        &mut self,
        dtype: DType,
        addresses: &[u64],
        mask_ratio: f64,
    ) -> Result<()> {
        self.addresses.copy_from_slice(addresses);
        // SAFETY: the caller's contract.
        unsafe { self.enqueue(dtype, mask_ratio) }
    }

    /// # Safety
    /// `self.addresses` holds valid device addresses of the table's tensors in `dtype`, alive and
    /// unwritten until the enqueued work has run.
    unsafe fn enqueue(&mut self, dtype: DType, mask_ratio: f64) -> Result<()> {
        self.stream.context().bind_to_thread().map_err(cuda)?;
        if self.bound != self.addresses {
            self.upload_grad_table()?;
        }
        self.last_dtype = Some(dtype);
        if self.shard.is_some() {
            // SAFETY: this function's contract.
            return unsafe { self.enqueue_sharded(dtype, mask_ratio) };
        }

        let raw_stream = self.stream.cu_stream();
        let stream = &self.stream;
        // The guards record, when dropped after the launches, that the kernels read the work list
        // and wrote the rest, so cudarc orders other streams' users after them.
        let (d_chunks, _read) = self.d_chunks.device_ptr(stream);
        let (d_grads, _grads_read) = self.d_grads.device_ptr(stream);
        let (d_groups, _groups_written) = self.d_groups.device_ptr_mut(stream);
        let (d_hist, _hist_written) = self.d_hist.device_ptr_mut(stream);
        let (d_step, _step_written) = self.d_step.device_ptr_mut(stream);
        let (d_cand, _cand_written) = self.d_cand.device_ptr_mut(stream);
        let launch = Launches {
            stream: raw_stream,
            n_chunks: self.n_chunks as u32,
            n_groups: self.map.n_groups() as u32,
            d_chunks,
            d_grads,
            d_groups,
            d_hist,
            d_step,
            d_cand,
        };
        let k = &self.kernels;
        let d = dtype_index(dtype);
        // SAFETY: the workspace buffers are owned by `self` and sized in `build` for this table,
        // the work list is uploaded, and the gradient addresses satisfy this function's contract.
        unsafe {
            launch.begin(k.begin, mask_ratio, dtype.key_bits())?;
            launch.histogram(k.histogram[d])?;
            if dtype == DType::F32 {
                launch.refine(k.refine[d], REFINE_COMPACT)?;
                launch.candidates(k.candidates)?;
                launch.refine(k.refine[d], REFINE_SKIP_CANDIDATES)?;
            } else {
                launch.refine(k.refine[d], 0)?;
            }
        }
        Ok(())
    }

    /// Enqueues the upload of `addresses` into the gradient table: n_tensors x 8 B from pageable
    /// memory, which the driver stages at once, so the host waits for nothing.
    fn upload_grad_table(&mut self) -> Result<()> {
        if !self.addresses.is_empty() {
            self.stream
                .memcpy_htod(&self.addresses, &mut self.d_grads)
                .map_err(cuda)?;
        }
        self.bound.copy_from_slice(&self.addresses);
        Ok(())
    }

    /// Enqueues the copy of the per-group stats and step totals to pinned host memory.
    pub fn copy_stats_async(&mut self) -> Result<()> {
        self.copied_dtype = self.last_dtype;
        self.h_groups.download(&self.stream, &self.d_groups)?;
        self.h_step.download(&self.stream, &self.d_step)
    }

    /// Waits for the stream, then returns the last selection's stats as copied by
    /// `copy_stats_async` (call that first).
    pub fn stats(&mut self) -> Result<Selection> {
        let dtype = self.copied_dtype.ok_or(Error::InvalidConfig {
            name: "stats before select",
            value: 0.0,
            expected: "call select and copy_stats_async first",
        })?;
        let groups = self.h_groups.read()?;
        let step = self.h_step.read()?[0];
        let mut selection = Selection {
            dtype,
            groups: groups[..self.map.n_groups()]
                .iter()
                .map(|g| GroupStats {
                    len: g.len,
                    target: g.target,
                    kept: g.kept,
                    threshold_key: g.threshold_key,
                    threshold: 0.0,
                    sum_sq: g.sum_sq,
                    non_finite: g.non_finite,
                })
                .collect(),
            group_of: self.map.group_of.clone(),
            non_finite: step.non_finite,
            sum_sq: step.sum_sq,
        };
        selection.finish_thresholds();
        Ok(selection)
    }
}

impl Drop for CudaSelector {
    fn drop(&mut self) {
        // The module is unloaded right after: let the enqueued kernels finish first.
        let _ = self.stream.synchronize();
    }
}
