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
use super::launch::{Launches, REFINE_COMPACT, REFINE_SKIP_CANDIDATES};
use super::module::{cuda, Function, Module};
use super::select::{dtype_index, CudaSelector};
use crate::shard::{CommStats, ShardLayout};
use crate::tuning::{BLOCK_THREADS, FIRST_DIGIT_BINS};
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
        layout.check_table(table)?;
        if collective.rank() != layout.rank() || collective.world() != layout.world() {
            return Err(Error::ShardLayout(
                "the collective's rank or world is not the layout's".into(),
            ));
        }
        let local: Vec<Range<usize>> = (0..table.len()).map(|t| layout.local_range(t)).collect();
        let local_total: usize = local.iter().map(|r| r.len()).sum();
        let capacity = (local_total as u64 / 32).clamp(1 << 16, crate::tuning::MAX_CUDA_CANDIDATES);
        let n_groups = crate::GroupMap::new(table, scope).n_groups();
        let mut selector = Self::build(
            stream.clone(),
            table,
            scope,
            capacity as usize,
            &local,
            n_groups + 1,
        )?;
        let print = crate::cpu::sharded_fingerprint(table, scope, &layout);
        let what = "the table, scope or shard layout";
        check_fingerprint(&stream, &mut *collective, print, what)?;
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

    /// The shard layout of a sharded selector.
    pub fn shard_layout(&self) -> Option<&ShardLayout> {
        self.shard.as_ref().map(|s| &s.layout)
    }

    /// Sharded: one all-reduce (with a host sync) checking that every rank passes the same
    /// `print`, else [`Error::ShardMismatch`] naming `what`. Unsharded: nothing to check.
    pub(crate) fn shard_agree(&mut self, print: u64, what: &'static str) -> Result<()> {
        match &mut self.shard {
            Some(sh) => check_fingerprint(&self.stream, &mut *sh.collective, print, what),
            None => Ok(()),
        }
    }

    /// Sharded: enqueues on the selector's stream the sum over the ranks of `buffer[..len]`, and
    /// counts it in the last selection's [`CommStats`]. Unsharded: nothing.
    pub(crate) fn shard_all_reduce_u64(
        &mut self,
        buffer: &mut CudaSlice<u64>,
        len: usize,
    ) -> Result<()> {
        match &mut self.shard {
            Some(sh) => {
                sh.comm.count(len);
                sh.collective.all_reduce_u64(&self.stream, buffer, len)
            }
            None => Ok(()),
        }
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
    unsafe fn sharded_launches(
        &mut self,
        sh: &mut CudaShards,
        dtype: DType,
        ratio: f64,
    ) -> Result<()> {
        let n_groups = self.map.n_groups() as u32;
        let hist_words = n_groups as usize * FIRST_DIGIT_BINS;
        let d = dtype_index(dtype);
        sh.comm = CommStats::default();
        let stream = self.stream.clone();
        // Device addresses of the workspace. Each guard records its use on our stream at once:
        // the buffers are the selector's own, and every launch and all-reduce below is on this
        // stream, so nothing else needs ordering after them.
        let launch = Launches {
            stream: stream.cu_stream(),
            n_chunks: self.n_chunks as u32,
            n_groups,
            d_chunks: self.d_chunks.device_ptr_mut(&stream).0,
            d_grads: self.d_grads.device_ptr_mut(&stream).0,
            d_groups: self.d_groups.device_ptr_mut(&stream).0,
            d_hist: self.d_hist.device_ptr_mut(&stream).0,
            d_step: self.d_step.device_ptr_mut(&stream).0,
            d_cand: self.d_cand.device_ptr_mut(&stream).0,
        };
        let d_sums = sh.d_sums.device_ptr_mut(&stream).0;
        let d_tail = launch.d_hist + 8 * hist_words as u64;
        let (decide, refine) = (sh.decide, sh.refine[d]);
        // SAFETY (every launch below): the workspace is owned by `self` and sized for this table
        // (d_hist with its tail of n_groups + 1 words, d_sums n_groups + 1), the work list is
        // uploaded, and the gradient addresses satisfy this function's contract.
        unsafe {
            launch.begin(self.kernels.begin, ratio, dtype.key_bits())?;
            launch.histogram(sh.histogram[d])?;
            gather(launch, sh.gather, d_tail, d_sums)?;
        }
        let words = hist_words + n_groups as usize + 1;
        sh.comm.count(words);
        sh.collective
            .all_reduce_u64(&stream, &mut self.d_hist, words)?;
        sh.comm.count(n_groups as usize + 1);
        sh.collective
            .all_reduce_f64(&stream, &mut sh.d_sums, n_groups as usize + 1)?;
        // SAFETY: as above.
        unsafe {
            shard_decide(launch, decide, d_tail, d_sums, 1)?;
            let flags = if dtype == DType::F32 {
                REFINE_COMPACT
            } else {
                0
            };
            launch.refine(refine, flags)?;
        }
        sh.comm.count(hist_words);
        sh.collective
            .all_reduce_u64(&stream, &mut self.d_hist, hist_words)?;
        // SAFETY: as above.
        unsafe { shard_decide(launch, decide, d_tail, d_sums, 0)? };
        if dtype == DType::F32 {
            // SAFETY: as above.
            unsafe {
                launch.candidates(sh.candidates)?;
                launch.refine(refine, REFINE_SKIP_CANDIDATES)?;
            }
            sh.comm.count(hist_words);
            sh.collective
                .all_reduce_u64(&stream, &mut self.d_hist, hist_words)?;
            // SAFETY: as above.
            unsafe { shard_decide(launch, decide, d_tail, d_sums, 0)? };
        }
        Ok(())
    }
}

fn arg<T>(p: &mut T) -> *mut c_void {
    p as *mut T as *mut c_void
}

/// `gm_shard_gather`: each group's non-finite count to the histograms' tail and its sum of g^2
/// to `d_sums`, the step's after them.
///
/// # Safety
/// As [`Launches::begin`]; `d_tail` and `d_sums` hold `n_groups + 1` words.
unsafe fn gather(mut l: Launches, f: Function, mut d_tail: u64, mut d_sums: u64) -> Result<()> {
    let grid = ((l.n_groups + 1).div_ceil(BLOCK_THREADS), 1, 1);
    let params = &mut [
        arg(&mut l.d_groups),
        arg(&mut l.n_groups),
        arg(&mut l.d_step),
        arg(&mut d_tail),
        arg(&mut d_sums),
    ];
    // SAFETY: the arguments match gm_shard_gather's parameters; the caller's contract.
    unsafe { f.launch(l.stream, grid, params) }
}

/// `gm_shard_decide`: every group's bucket from the reduced histogram (`first`: the first digit,
/// and the reduced totals put back).
///
/// # Safety
/// As [`gather`].
unsafe fn shard_decide(
    mut l: Launches,
    f: Function,
    mut d_tail: u64,
    mut d_sums: u64,
    mut first: u32,
) -> Result<()> {
    let grid = (l.n_groups.max(1), 1, 1);
    let params = &mut [
        arg(&mut l.d_groups),
        arg(&mut l.n_groups),
        arg(&mut l.d_hist),
        arg(&mut l.d_step),
        arg(&mut d_tail),
        arg(&mut d_sums),
        arg(&mut first),
    ];
    // SAFETY: the arguments match gm_shard_decide's parameters; the caller's contract.
    unsafe { f.launch(l.stream, grid, params) }
}

/// One all-reduce of `world` words, each rank's fingerprint in its own: all must agree on `what`.
fn check_fingerprint(
    stream: &Arc<CudaStream>,
    collective: &mut dyn DeviceCollective,
    print: u64,
    what: &'static str,
) -> Result<()> {
    let mut words = vec![0u64; collective.world()];
    words[collective.rank()] = print;
    let mut d_words = stream.clone_htod(&words).map_err(cuda)?;
    collective.all_reduce_u64(stream, &mut d_words, words.len())?;
    let reduced = stream.clone_dtoh(&d_words).map_err(cuda)?;
    if reduced.iter().any(|&w| w != print) {
        return Err(Error::ShardMismatch { what });
    }
    Ok(())
}
