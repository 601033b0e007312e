//! The fused masked AdamW on the CPU: one parallel pass (rayon) over a fixed work list of chunks.
//!
//! The work list cuts every tensor into runs of at most `CPU_CHUNK_LEN` entries, the same chunks as
//! the CPU selector, so that sums over chunks are added in the same order on both paths. Each chunk
//! reads g, p, m, v (and the master weights) once and writes p, m, v once; the entry's fate comes
//! from its tensor's [`KeepRule`]. Per-entry math is [`masked_update`]; a CUDA kernel walks the same
//! list with the same function.
//!
//! Chunks of one tensor are disjoint, so parallel tasks write disjoint ranges of every buffer. The
//! tasks reach the caller's buffers through a table of base pointers filled before the parallel
//! section (the workspace is sized once; a step allocates nothing here).

use half::bf16;
use rayon::prelude::*;

use super::math::{masked_update, StepScalars};
use super::slots::{F32Slots, MasterSlots, ParamSlots, RoundSlots};
use crate::rng::draw;
use std::ops::Range;

use crate::tuning::CPU_CHUNK_LEN;
use crate::work::runs;
use crate::{GradElem, MaskedUpdate, TensorTable};

/// A run of at most `CPU_CHUNK_LEN` entries of one tensor (of this rank's slice of it).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chunk {
    pub tensor: usize,
    /// First entry, within the (local) buffer of the tensor.
    pub start: usize,
    pub len: usize,
    /// First entry, in the concatenation of every whole tensor: the rng's index.
    pub global: u64,
    /// First entry, in the flat state (m, v, master) of this rank's slices.
    pub state_at: usize,
    /// The chunk's whole leaves of the sum of g^2, relative to `start`.
    pub whole_start: usize,
    pub whole_end: usize,
}

/// The chunks of this rank's slices `local` of `table`'s tensors, tensor by tensor (the order of
/// the CPU selector's chunks).
pub(crate) fn chunk_list(table: &TensorTable, local: &[Range<usize>]) -> Vec<Chunk> {
    runs(table, local, CPU_CHUNK_LEN)
        .into_iter()
        .map(|run| Chunk {
            tensor: run.tensor,
            start: run.start,
            len: run.len,
            global: run.global,
            state_at: run.local_flat as usize,
            whole_start: run.whole.start,
            whole_end: run.whole.end,
        })
        .collect()
}

/// Which entries of a tensor the update keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeepRule {
    /// Every entry (mask off, or a dense tensor).
    All,
    /// Entries whose key is `>=` the group's threshold key (GMT).
    Threshold(u32),
    /// Entries whose draw in the stream `key` is `>=` `cut` (random mask).
    Random { key: u64, cut: u64 },
    /// None, and nothing is written: a fixed-frozen tensor.
    Frozen,
}

/// What every entry of a step shares: the masked-entry mode and the scalars.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpdateArgs {
    pub masked: MaskedUpdate,
    pub scalars: StepScalars,
}

/// Updates one chunk; returns the number of entries kept. `global` is the chunk's first global
/// index.
#[inline(always)]
pub(crate) fn update_chunk<G: GradElem, P: ParamSlots>(
    params: P,
    m: &mut [f32],
    v: &mut [f32],
    grads: &[G],
    global: u64,
    rule: KeepRule,
    args: &UpdateArgs,
) -> u64 {
    match rule {
        KeepRule::All => run(params, m, v, grads, global, args, |_, _| true),
        KeepRule::Threshold(t) => run(params, m, v, grads, global, args, |key, _| key >= t),
        KeepRule::Random { key, cut } => run(params, m, v, grads, global, args, |_, index| {
            u64::from(draw(key, index)) >= cut
        }),
        KeepRule::Frozen => 0,
    }
}

/// Dispatches on the masked-entry mode, so that each loop sees it as a constant: with `ZeroGrad`
/// every entry is written, no old value is read back, and the bf16 loops vectorize.
#[inline(always)]
fn run<G: GradElem, P: ParamSlots>(
    params: P,
    m: &mut [f32],
    v: &mut [f32],
    grads: &[G],
    global: u64,
    args: &UpdateArgs,
    keeps: impl Fn(u32, u64) -> bool,
) -> u64 {
    // Copies: with the scalars behind a reference, LLVM must assume the stores to p, m and v may
    // change them, reloads them every entry and does not vectorize the loop.
    let scalars = args.scalars;
    match args.masked {
        MaskedUpdate::ZeroGrad => {
            run_mode::<_, _, true>(params, m, v, grads, global, &scalars, keeps)
        }
        MaskedUpdate::Freeze => {
            run_mode::<_, _, false>(params, m, v, grads, global, &scalars, keeps)
        }
    }
}

#[inline(always)]
fn run_mode<G: GradElem, P: ParamSlots, const ZERO_GRAD: bool>(
    mut params: P,
    m: &mut [f32],
    v: &mut [f32],
    grads: &[G],
    global: u64,
    scalars: &StepScalars,
    keeps: impl Fn(u32, u64) -> bool,
) -> u64 {
    let n = grads.len();
    let (m, v) = (&mut m[..n], &mut v[..n]);
    let masked = if ZERO_GRAD {
        MaskedUpdate::ZeroGrad
    } else {
        MaskedUpdate::Freeze
    };
    // A u32 count (a chunk has at most CPU_CHUNK_LEN < 2^32 entries) keeps the loop in 32-bit lanes.
    debug_assert!(n <= CPU_CHUNK_LEN);
    let mut kept = 0u32;
    for i in 0..n {
        let g = grads[i];
        let index = global + i as u64;
        let keep = keeps(g.key(), index);
        kept += u32::from(keep);
        let (p_new, m_new, v_new) =
            masked_update(params.get(i), m[i], v[i], g.to_f32(), keep, masked, scalars);
        params.set(i, p_new, index, keep || ZERO_GRAD);
        m[i] = m_new;
        v[i] = v_new;
    }
    u64::from(kept)
}

/// A base pointer shared by the tasks of one parallel section, each of which touches a disjoint
/// range of the buffer behind it.
#[derive(Clone, Copy)]
pub(crate) struct SharedPtr<T>(pub *mut T);

// SAFETY: tasks only dereference disjoint ranges (see `update_all`), so sharing the pointer is sound.
unsafe impl<T> Send for SharedPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SharedPtr<T> {}

impl<T> SharedPtr<T> {
    /// # Safety
    /// `start + len` is within the buffer behind the pointer, the buffer outlives `'a`, and no
    /// other reference touches `start..start + len` while the slice lives.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice<'a>(self, start: usize, len: usize) -> &'a mut [T] {
        // SAFETY: the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

/// The parameters of one step, as base pointers per tensor.
#[derive(Clone, Copy)]
pub(crate) enum Params<'a> {
    F32(&'a [SharedPtr<f32>]),
    /// bf16 parameters and the flat master buffer (indexed by global offset).
    Master(&'a [SharedPtr<bf16>], SharedPtr<f32>),
    /// bf16 parameters, stochastic rounding with this stream key.
    Round(&'a [SharedPtr<bf16>], u64),
}

/// Runs the update over every chunk. `m`, `v` (and the master inside `params`) are flat buffers of
/// this rank's total length (the table's, unsharded); `params` holds one base pointer per tensor. `chunk_kept[c]` receives
/// chunk `c`'s kept count.
///
/// # Safety
/// Every pointer in `params` points to a live, exclusively borrowed buffer of its tensor's length
/// (the master buffer: this rank's total length) for the duration of the call, and `chunks` is
/// [`chunk_list`] of the table and this rank's slices, so the chunks' ranges are disjoint and in
/// bounds.
#[allow(clippy::too_many_arguments)] // the buffers of one fused pass, as a kernel takes them
pub(crate) unsafe fn update_all<G: GradElem>(
    chunks: &[Chunk],
    rules: &[KeepRule],
    grads: &[&[G]],
    params: Params<'_>,
    m: &mut [f32],
    v: &mut [f32],
    args: &UpdateArgs,
    chunk_kept: &mut [u64],
) {
    let (m, v) = (SharedPtr(m.as_mut_ptr()), SharedPtr(v.as_mut_ptr()));
    chunk_kept
        .par_iter_mut()
        .zip(chunks.par_iter())
        .for_each(|(kept, c)| {
            let g = &grads[c.tensor][c.start..][..c.len];
            let rule = rules[c.tensor];
            let at = c.state_at;
            // SAFETY: the chunks partition this rank's entries, so [state_at, state_at + len) of
            // the flat m and v belongs to this task alone; both hold the local total length.
            let (m, v) = unsafe { (m.slice(at, c.len), v.slice(at, c.len)) };
            *kept = match params {
                Params::F32(ptrs) => {
                    // SAFETY: this task alone owns [start, start + len) of its tensor's buffer.
                    let p = unsafe { ptrs[c.tensor].slice(c.start, c.len) };
                    update_chunk(F32Slots(p), m, v, g, c.global, rule, args)
                }
                Params::Master(ptrs, master) => {
                    // SAFETY: as above, for the parameters and the flat master buffer.
                    let (params, master) = unsafe {
                        (
                            ptrs[c.tensor].slice(c.start, c.len),
                            master.slice(at, c.len),
                        )
                    };
                    let slots = MasterSlots { params, master };
                    update_chunk(slots, m, v, g, c.global, rule, args)
                }
                Params::Round(ptrs, key) => {
                    // SAFETY: as above.
                    let params = unsafe { ptrs[c.tensor].slice(c.start, c.len) };
                    let slots = RoundSlots { params, key };
                    update_chunk(slots, m, v, g, c.global, rule, args)
                }
            };
        });
}
