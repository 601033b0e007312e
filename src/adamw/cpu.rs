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
use crate::rng::{draw, stochastic_round_bf16};
use crate::tuning::CPU_CHUNK_LEN;
use crate::{GradElem, MaskedUpdate, TensorTable};

/// A run of at most `CPU_CHUNK_LEN` entries of one tensor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chunk {
    pub tensor: usize,
    /// First entry, within the tensor.
    pub start: usize,
    pub len: usize,
    /// First entry, in the concatenation of every tensor.
    pub global: u64,
}

/// The chunks of `table`, tensor by tensor (the order of the CPU selector's chunks).
pub(crate) fn chunk_list(table: &TensorTable) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    for (tensor, &len) in table.lengths().iter().enumerate() {
        for start in (0..len).step_by(CPU_CHUNK_LEN) {
            chunks.push(Chunk {
                tensor,
                start,
                len: CPU_CHUNK_LEN.min(len - start),
                global: table.offsets()[tensor] + start as u64,
            });
        }
    }
    chunks
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

/// Sum of g^2 (f64, in the CPU selector's order: eight lanes over runs of 8 entries, the last
/// partial run into lane 0, added as `((l0 + l1) + (l2 + l3)) + ...`, see
/// `cpu::radix::first_digit_histogram`) and count of Inf/NaN entries of `grads`.
pub(crate) fn sum_sq_and_non_finite<G: GradElem>(grads: &[G]) -> (f64, u64) {
    let non_finite_key = G::DTYPE.non_finite_key();
    let mut lanes = [0.0f64; 8];
    let mut non_finite = 0u64;
    let mut eights = grads.chunks_exact(8);
    for eight in &mut eights {
        for (lane, x) in lanes.iter_mut().zip(eight) {
            let f = f64::from(x.to_f32());
            *lane += f * f;
            non_finite += u64::from(x.key() >= non_finite_key);
        }
    }
    for &x in eights.remainder() {
        let f = f64::from(x.to_f32());
        lanes[0] += f * f;
        non_finite += u64::from(x.key() >= non_finite_key);
    }
    let sum_sq = lanes.chunks(2).map(|pair| pair[0] + pair[1]).sum();
    (sum_sq, non_finite)
}

/// Where one chunk's parameters live and how a new value is stored.
pub(crate) trait ParamSlots {
    fn get(&self, i: usize) -> f32;
    /// Stores `x` at `i` (global index `index`) when `write`; otherwise leaves the entry as it is.
    fn set(&mut self, i: usize, x: f32, index: u64, write: bool);
}

/// f32 parameters.
pub(crate) struct F32Slots<'a>(pub &'a mut [f32]);

impl ParamSlots for F32Slots<'_> {
    #[inline(always)]
    fn get(&self, i: usize) -> f32 {
        self.0[i]
    }
    #[inline(always)]
    fn set(&mut self, i: usize, x: f32, _index: u64, write: bool) {
        self.0[i] = if write { x } else { self.0[i] };
    }
}

/// bf16 parameters with f32 master weights: the master is updated, the parameter is its
/// round-to-nearest-even bf16.
pub(crate) struct MasterSlots<'a> {
    pub params: &'a mut [bf16],
    pub master: &'a mut [f32],
}

impl ParamSlots for MasterSlots<'_> {
    #[inline(always)]
    fn get(&self, i: usize) -> f32 {
        self.master[i]
    }
    #[inline(always)]
    fn set(&mut self, i: usize, x: f32, _index: u64, write: bool) {
        if write {
            self.master[i] = x;
            self.params[i] = bf16::from_f32(x);
        }
    }
}

/// bf16 parameters without master weights, stochastically rounded with the stream `key`.
pub(crate) struct RoundSlots<'a> {
    pub params: &'a mut [bf16],
    pub key: u64,
}

impl ParamSlots for RoundSlots<'_> {
    #[inline(always)]
    fn get(&self, i: usize) -> f32 {
        self.params[i].to_f32()
    }
    #[inline(always)]
    fn set(&mut self, i: usize, x: f32, index: u64, write: bool) {
        if write {
            self.params[i] = stochastic_round_bf16(x, draw(self.key, index));
        }
    }
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

#[inline(always)]
fn run<G: GradElem, P: ParamSlots>(
    mut params: P,
    m: &mut [f32],
    v: &mut [f32],
    grads: &[G],
    global: u64,
    args: &UpdateArgs,
    keeps: impl Fn(u32, u64) -> bool,
) -> u64 {
    let n = grads.len();
    let (m, v) = (&mut m[..n], &mut v[..n]);
    let (masked, scalars) = (args.masked, &args.scalars);
    let write_masked = masked == MaskedUpdate::ZeroGrad;
    let mut kept = 0u64;
    for i in 0..n {
        let g = grads[i];
        let index = global + i as u64;
        let keep = keeps(g.key(), index);
        kept += u64::from(keep);
        let (p_new, m_new, v_new) =
            masked_update(params.get(i), m[i], v[i], g.to_f32(), keep, masked, scalars);
        params.set(i, p_new, index, keep || write_masked);
        m[i] = m_new;
        v[i] = v_new;
    }
    kept
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
/// the table's total length; `params` holds one base pointer per tensor. `chunk_kept[c]` receives
/// chunk `c`'s kept count.
///
/// # Safety
/// Every pointer in `params` points to a live, exclusively borrowed buffer of its tensor's length
/// (the master buffer: the table's total length) for the duration of the call, and `chunks` is
/// [`chunk_list`] of that table, so the chunks' ranges are disjoint and in bounds.
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
            let at = c.global as usize;
            // SAFETY: the chunks partition the table's entries, so [global, global + len) of the
            // flat m and v belongs to this task alone; both hold the table's total length.
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
