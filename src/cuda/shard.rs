//! `CudaSelector::sharded`: one rank of a sharded model on the GPU (`kernels/select_shard.cu`).
//!
//! The passes of the one-GPU selector, with the histograms all-reduced (a [`DeviceCollective`]:
//! NCCL, on the selector's stream, no host sync) before every bucket choice, which
//! `gm_shard_decide` then takes on every rank alike. Per step: f32 3 all-reduces of the
//! histograms plus one of the sums of g^2 (f64), bf16/f16 2 plus 1. Each carries every group's
//! histogram (`groups x 4096` u64, 32 KiB a group; refinement digits use the first 2048 or 256
//! bins of each, sent whole).
//!
//! Thresholds, kept counts and non-finite counts equal the unsharded ones exactly; the sums of g^2
//! are added by atomics in another order (on one GPU too, run to run), so they agree within f64
//! rounding, and so may a clipped update's last bit.

use std::ffi::c_void;
use std::ops::Range;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtrMut};

use super::collective::DeviceCollective;
use super::module::{cuda, Function, Module};
use super::select::{dtype_index, CudaSelector, REFINE_COMPACT, REFINE_SKIP_CANDIDATES};
use crate::shard::{CommStats, ShardLayout};
use crate::tuning::{BLOCK_THREADS, CANDIDATE_BLOCKS, FIRST_DIGIT_BINS};
use crate::{DType, Error, Result, Scope, TensorTable};

/// A sharded selector's layout, collective, kernels and reduce buffer of sums.
pub(crate) struct CudaShards {
    pub layout: ShardLayout,
    collective: Box<dyn DeviceCollective>,
    _module: Module,
    histogram: [Function; 3],
    refine: [Function; 3],
    candidates: Function,
    gather: Function,
    decide: Function,
    /// Per group its sum of g^2, then the step's.
    d_sums: CudaSlice<f64>,
    /// What the last selection enqueued.
    pub comm: CommStats,
}

impl CudaSelector {
    /// A selector for one rank of a sharded model: `layout` says which slice of each tensor this
    /// rank holds (its buffers have those lengths), `collective` how the ranks all-reduce on
    /// `stream`. Every rank builds one with the same table, scope and layout; this is checked by
    /// one all-reduce of a fingerprint ([`Error::ShardMismatch`]), the only host sync.
    pub fn sharded(
        stream: Arc<CudaStream>,
        table: &TensorTable,
        scope: Scope,
        layout: ShardLayout,
        mut collective: Box<dyn DeviceCollective>,
    ) -> Result<Self> {
        if !layout.fits(table) {
            return Err(Error::ShardLayout("the layout was built for another table".into()));
        }
        if collective.rank() != layout.rank() || collective.world() != layout.world() {
            return Err(Error::ShardLayout("the collective's rank or world is not the layout's".into()));
        }
        let local: Vec<Range<usize>> = (0..table.len()).map(|t| layout.local_range(t)).collect();
        let local_total: usize = local.iter().map(|r| r.len()).sum();
        let capacity = (local_total as u64 / 32).clamp(1 << 16, crate::tuning::MAX_CUDA_CANDIDATES);
        let n_groups = crate::GroupMap::new(table, scope).n_groups();
        let mut selector = Self::build(stream.clone(), table, scope, capacity as usize, &local, n_groups + 1)?;
        let print = crate::cpu::sharded_fingerprint(table, scope, &layout);
        check_fingerprint(&stream, &mut *collective, print)?;
        let module = Module::load(stream.context(), "select_shard")?;
        selector.shard = Some(Box::new(CudaShards {
            histogram: [
                module.function("gm_histogram_shard_f32")?,
                module.function("gm_histogram_shard_bf16")?,
                module.function("gm_histogram_shard_f16")?,
            ],
            refine: [
                module.function("gm_refine_shard_f32")?,
                module.function("gm_refine_shard_bf16")?,
                module.function("gm_refine_shard_f16")?,
            ],
            candidates: module.function("gm_refine_candidates_shard")?,
            gather: module.function("gm_shard_gather")?,
            decide: module.function("gm_shard_decide")?,
            d_sums: stream.alloc_zeros::<f64>(n_groups + 1).map_err(cuda)?,
            _module: module,
            comm: CommStats::default(),
            layout,
            collective,
        }));
        Ok(selector)
    }

    /// What the last selection enqueued (zero unsharded).
    pub fn comm_stats(&self) -> CommStats {
        self.shard.as_ref().map_or(CommStats::default(), |s| s.comm)
    }

    /// The sharded passes (see the module notes and `kernels/select_shard.cu`).
    ///
    /// # Safety
    /// As `enqueue`: `self.addresses` holds valid device addresses of this rank's slices in
    /// `dtype`, alive and unwritten until the enqueued work has run; the work list is uploaded.
    pub(super) unsafe fn enqueue_sharded(&mut self, dtype: DType, mask_ratio: f64) -> Result<()> {
        let mut shard = self.shard.take().expect("a sharded selector");
        // SAFETY: this function's contract.
        let outcome = unsafe { self.sharded_launches(&mut shard, dtype, mask_ratio) };
        self.shard = Some(shard);
        outcome
    }

    /// # Safety
    /// As [`CudaSelector::enqueue_sharded`].
    unsafe fn sharded_launches(&mut self, sh: &mut CudaShards, dtype: DType, ratio: f64) -> Result<()> {
        let (n_chunks, n_groups) = (self.chunks.len() as u32, self.map.n_groups() as u32);
        let hist_words = n_groups as usize * FIRST_DIGIT_BINS;
        let raw_stream = self.stream.cu_stream();
        let d = dtype_index(dtype);
        sh.comm = CommStats::default();
        let stream = self.stream.clone();
        // Device addresses of the workspace; each guard records its use on our stream at once.
        let (mut d_chunks, mut d_groups, mut d_hist, mut d_step, mut d_cand, mut d_sums) = (
            self.d_chunks.device_ptr_mut(&stream).0,
            self.d_groups.device_ptr_mut(&stream).0,
            self.d_hist.device_ptr_mut(&stream).0,
            self.d_step.device_ptr_mut(&stream).0,
            self.d_cand.device_ptr_mut(&stream).0,
            sh.d_sums.device_ptr_mut(&stream).0,
        );
        let mut d_tail = d_hist + 8 * hist_words as u64;
        let arg = |p: &mut u64| p as *mut u64 as *mut c_void;
        let (mut ratio, mut key_bits, mut groups) = (ratio, dtype.key_bits(), n_groups);
        // SAFETY (every launch below): the argument arrays match the kernels' parameter lists in
        // kernels/select.cu and select_shard.cu; the workspace is owned by `self` and sized for
        // this table (d_hist with its tail of n_groups + 1 words, d_sums n_groups + 1); the
        // gradient addresses satisfy this function's contract.
        unsafe {
            self.kernels.begin.launch(
                raw_stream,
                (n_groups.div_ceil(BLOCK_THREADS), 1, 1),
                &mut [arg(&mut d_groups), &mut groups as *mut u32 as _, arg(&mut d_step), &mut ratio as *mut f64 as _, &mut key_bits as *mut u32 as _],
            )?;
            sh.histogram[d].launch(
                raw_stream,
                (n_chunks, 1, 1),
                &mut [arg(&mut d_chunks), arg(&mut d_groups), arg(&mut d_hist), arg(&mut d_step)],
            )?;
            sh.gather.launch(
                raw_stream,
                ((n_groups + 1).div_ceil(BLOCK_THREADS), 1, 1),
                &mut [arg(&mut d_groups), &mut groups as *mut u32 as _, arg(&mut d_step), arg(&mut d_tail), arg(&mut d_sums)],
            )?;
        }
        sh.comm.count(hist_words + n_groups as usize + 1);
        sh.collective.all_reduce_u64(&stream, &mut self.d_hist, hist_words + n_groups as usize + 1)?;
        sh.comm.count(n_groups as usize + 1);
        sh.collective.all_reduce_f64(&stream, &mut sh.d_sums, n_groups as usize + 1)?;
        let (decide_fn, refine_fn) = (sh.decide, sh.refine[d]);
        let decide = move |first: u32| {
            let (mut groups_, mut hist, mut step, mut tail, mut sums, mut first) =
                (d_groups, d_hist, d_step, d_tail, d_sums, first);
            let mut groups = n_groups;
            // SAFETY: as above.
            unsafe {
                decide_fn.launch(
                    raw_stream,
                    (n_groups.max(1), 1, 1),
                    &mut [arg(&mut groups_), &mut groups as *mut u32 as _, arg(&mut hist), arg(&mut step), arg(&mut tail), arg(&mut sums), &mut first as *mut u32 as _],
                )
            }
        };
        decide(1)?;
        let refine = move |mut flags: u32| {
            let (mut chunks, mut groups_, mut hist, mut cand) = (d_chunks, d_groups, d_hist, d_cand);
            // SAFETY: as above.
            unsafe {
                refine_fn.launch(
                    raw_stream,
                    (n_chunks, 1, 1),
                    &mut [arg(&mut chunks), arg(&mut groups_), arg(&mut hist), arg(&mut cand), &mut flags as *mut u32 as _],
                )
            }
        };
        if dtype == DType::F32 {
            refine(REFINE_COMPACT)?;
        } else {
            refine(0)?;
        }
        sh.comm.count(hist_words);
        sh.collective.all_reduce_u64(&stream, &mut self.d_hist, hist_words)?;
        decide(0)?;
        if dtype == DType::F32 {
            // SAFETY: as above.
            unsafe {
                sh.candidates.launch(
                    raw_stream,
                    (n_groups, CANDIDATE_BLOCKS, 1),
                    &mut [arg(&mut d_groups), arg(&mut d_hist), arg(&mut d_cand)],
                )?;
            }
            refine(REFINE_SKIP_CANDIDATES)?;
            sh.comm.count(hist_words);
            sh.collective.all_reduce_u64(&stream, &mut self.d_hist, hist_words)?;
            decide(0)?;
        }
        Ok(())
    }
}

/// One all-reduce of `world` words, each rank's fingerprint in its own: all must agree.
fn check_fingerprint(stream: &Arc<CudaStream>, collective: &mut dyn DeviceCollective, print: u64) -> Result<()> {
    let mut words = vec![0u64; collective.world()];
    words[collective.rank()] = print;
    let mut d_words = stream.clone_htod(&words).map_err(cuda)?;
    collective.all_reduce_u64(stream, &mut d_words, words.len())?;
    let reduced = stream.clone_dtoh(&d_words).map_err(cuda)?;
    if reduced.iter().any(|&w| w != print) {
        return Err(Error::ShardMismatch { what: "the table, scope or shard layout" });
    }
    Ok(())
}
