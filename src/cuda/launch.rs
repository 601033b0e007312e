//! The launches of one selection (`kernels/select.cu`, `select_shard.cu`), with their argument
//! lists written once: [`CudaSelector`](super::CudaSelector) enqueues them for one rank, and the
//! sharded selector (`shard.rs`) with all-reduces between them.

use std::ffi::c_void;

use cudarc::driver::sys;

use super::module::Function;
use crate::tuning::{BLOCK_THREADS, CANDIDATE_BLOCKS};
use crate::Result;

/// Flags of `gm_refine_*` (kernels/select.cuh).
pub(super) const REFINE_COMPACT: u32 = 1;
pub(super) const REFINE_SKIP_CANDIDATES: u32 = 2;

/// One selector's stream, sizes and workspace addresses, as its kernels take them.
#[derive(Clone, Copy)]
pub(super) struct Launches {
    pub stream: sys::CUstream,
    pub n_chunks: u32,
    pub n_groups: u32,
    pub d_chunks: u64,
    /// The gradient table: one device address per tensor.
    pub d_grads: u64,
    pub d_groups: u64,
    pub d_hist: u64,
    pub d_step: u64,
    pub d_cand: u64,
}

fn arg<T>(p: &mut T) -> *mut c_void {
    p as *mut T as *mut c_void
}

// SAFETY (every launch in this impl): each argument array matches the kernel's parameter list in
// kernels/select.cu, select.cuh and select_shard.cu; the contract of the `unsafe fn`s covers the
// addresses.
impl Launches {
    /// `gm_select_begin`: each group's target, stage and counters for this step.
    ///
    /// # Safety
    /// The addresses are the selector's workspace (work list and gradient table uploaded, every
    /// buffer sized for its table), alive until the enqueued work has run, and the gradient
    /// table's addresses are valid device memory of their dtype, unwritten until then.
    pub unsafe fn begin(mut self, f: Function, mut ratio: f64, mut key_bits: u32) -> Result<()> {
        let grid = (self.n_groups.div_ceil(BLOCK_THREADS), 1, 1);
        let params = &mut [
            arg(&mut self.d_groups),
            arg(&mut self.n_groups),
            arg(&mut self.d_step),
            arg(&mut ratio),
            arg(&mut key_bits),
        ];
        // SAFETY: see the impl note.
        unsafe { f.launch(self.stream, grid, params) }
    }

    /// Pass 1 over every chunk (`gm_histogram_*`, or its sharded form).
    ///
    /// # Safety
    /// As [`Launches::begin`].
    pub unsafe fn histogram(mut self, f: Function) -> Result<()> {
        let params = &mut [
            arg(&mut self.d_chunks),
            arg(&mut self.d_grads),
            arg(&mut self.d_groups),
            arg(&mut self.d_hist),
            arg(&mut self.d_step),
        ];
        // SAFETY: see the impl note.
        unsafe { f.launch(self.stream, (self.n_chunks, 1, 1), params) }
    }

    /// One refinement pass over every chunk; `flags` picks compaction or skips the groups that
    /// the candidate kernel finishes.
    ///
    /// # Safety
    /// As [`Launches::begin`].
    pub unsafe fn refine(mut self, f: Function, mut flags: u32) -> Result<()> {
        let params = &mut [
            arg(&mut self.d_chunks),
            arg(&mut self.d_grads),
            arg(&mut self.d_groups),
            arg(&mut self.d_hist),
            arg(&mut self.d_cand),
            arg(&mut flags),
        ];
        // SAFETY: see the impl note.
        unsafe { f.launch(self.stream, (self.n_chunks, 1, 1), params) }
    }

    /// The last f32 digit over each group's compacted candidates.
    ///
    /// # Safety
    /// As [`Launches::begin`].
    pub unsafe fn candidates(mut self, f: Function) -> Result<()> {
        let grid = (self.n_groups, CANDIDATE_BLOCKS, 1);
        let params = &mut [
            arg(&mut self.d_groups),
            arg(&mut self.d_hist),
            arg(&mut self.d_cand),
        ];
        // SAFETY: see the impl note.
        unsafe { f.launch(self.stream, grid, params) }
    }
}
