//! The result of a selection, shared by the CPU engine and the CUDA backend.
//!
//! In a group of `len` entries at mask ratio `r`, `target = len - floor(r * len)` entries must be kept.
//! The threshold is the `target`-th largest |g| of the group; every entry with |g| >= threshold is
//! kept, so ties at the threshold are all kept and `kept >= target`.
//! Special cases: `r = 0` runs no selection (threshold 0, everything kept); `target = 0` (r = 1, or
//! an empty group) keeps nothing (threshold key [`KEEP_NONE`], reported as +Inf).

use crate::DType;

/// Threshold key of a group that keeps nothing: above every key, NaN's included.
pub const KEEP_NONE: u32 = u32::MAX;

/// The threshold key and kept count of a group that needs no selection, or None when one must
/// run. `target = 0` (r = 1, or an empty group, even at r = 0) keeps nothing; otherwise r = 0 keeps
/// everything. The CPU selector, the CPU optimizer's mask-off scan and `gm_select_begin` on the GPU
/// decide in this order.
pub(crate) fn without_selection(len: u64, target: u64, mask_ratio: f64) -> Option<(u32, u64)> {
    if target == 0 {
        Some((KEEP_NONE, 0))
    } else if mask_ratio == 0.0 {
        Some((0, len))
    } else {
        None
    }
}

/// Per-group outcome of one selection.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GroupStats {
    /// Selected (non-dense) entries in the group.
    pub len: u64,
    /// Entries that must be kept: `len - floor(mask_ratio * len)`.
    pub target: u64,
    /// Entries actually kept (`|g| >= threshold`); `>= target` when there are ties.
    pub kept: u64,
    /// The threshold as a key (|g|'s bits, sign cleared, in the gradient's own dtype).
    pub threshold_key: u32,
    /// The threshold as a value: the `target`-th largest |g|, 0 when r = 0, +Inf when nothing is kept.
    pub threshold: f32,
    /// Sum of g^2 over the group's entries.
    pub sum_sq: f64,
    /// Inf and NaN entries in the group.
    pub non_finite: u64,
}

impl GroupStats {
    /// Whether an entry with selection key `key` is kept.
    #[inline(always)]
    pub fn keeps_key(&self, key: u32) -> bool {
        key >= self.threshold_key
    }
}

/// Outcome of one selection over every tensor of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    /// Element type of the gradients the selection ran on.
    pub dtype: DType,
    /// One entry per selection group.
    pub groups: Vec<GroupStats>,
    /// Selection group of each tensor.
    pub group_of: Vec<u32>,
    /// Inf and NaN entries over every tensor, dense ones included. Non-zero means the step is skipped.
    pub non_finite: u64,
    /// Sum of g^2 over every tensor, dense ones included.
    pub sum_sq: f64,
}

impl Selection {
    /// The stats of the group that tensor `tensor` belongs to.
    pub fn group_of_tensor(&self, tensor: usize) -> &GroupStats {
        &self.groups[self.group_of[tensor] as usize]
    }

    /// The global L2 norm of the gradient (before masking).
    pub fn grad_norm(&self) -> f64 {
        self.sum_sq.sqrt()
    }

    /// True when the step must be skipped because a gradient entry is Inf or NaN.
    pub fn has_non_finite(&self) -> bool {
        self.non_finite > 0
    }

    /// Sets the value form of every group's threshold from its key.
    pub(crate) fn finish_thresholds(&mut self) {
        for stats in &mut self.groups {
            stats.threshold = if stats.threshold_key == KEEP_NONE {
                f32::INFINITY
            } else {
                self.dtype.key_to_f32(stats.threshold_key)
            };
        }
    }
}
