//! `SharedSlice`: a buffer that parallel tasks write at disjoint positions.

/// A raw view of a `[u32]` that rayon tasks share, each touching only its own range.
#[derive(Clone, Copy)]
pub struct SharedSlice(*mut u32, usize);

// SAFETY: every user touches disjoint ranges (see the call sites), so sharing the pointer is sound.
unsafe impl Send for SharedSlice {}
// SAFETY: as above.
unsafe impl Sync for SharedSlice {}

impl SharedSlice {
    /// Views `buffer`; the view must not outlive it (callers use it within one borrow).
    pub fn new(buffer: &mut [u32]) -> Self {
        SharedSlice(buffer.as_mut_ptr(), buffer.len())
    }

    /// The range `[start, start + len)` as a slice; panics when out of bounds.
    ///
    /// # Safety
    /// The buffer outlives the slice, and no other task reads or writes that range while the
    /// slice lives.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, start: usize, len: usize) -> &mut [u32] {
        assert!(
            start.checked_add(len).is_some_and(|end| end <= self.1),
            "SharedSlice range out of bounds"
        );
        // SAFETY: in bounds (checked above); alive and exclusive per the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}
