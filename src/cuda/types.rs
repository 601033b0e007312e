//! `#[repr(C)]` mirrors of `kernels/gm_types.cuh`. Field order, types and sizes must match; both
//! sides assert the sizes.

use cudarc::driver::{DeviceRepr, ValidAsZeroBits};

/// Selection stages of a group between passes (`GM_STAGE_*`).
pub const STAGE_DONE: u32 = 0;

/// One entry of the device work list: at most `GPU_CHUNK_LEN` entries of one tensor.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GmChunk {
    /// Device address of the chunk's first gradient entry.
    pub d_data: u64,
    /// Index of that entry in the concatenation of all tensors.
    pub first: u64,
    pub len: u32,
    pub group: u32,
    pub dense: u32,
    pub tensor: u32,
}

/// One selection group's device state and result.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GmGroup {
    pub len: u64,
    pub target: u64,
    pub above: u64,
    pub bucket: u64,
    pub kept: u64,
    pub non_finite: u64,
    pub cand_start: u64,
    pub cand_count: u64,
    pub sum_sq: f64,
    pub n_chunks: u32,
    pub arrived: u32,
    pub stage: u32,
    pub prefix: u32,
    pub shift: u32,
    pub threshold_key: u32,
    pub min_key: u32,
    pub has_candidates: u32,
}

/// Step-wide totals and the candidate buffer's bookkeeping.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GmStep {
    pub sum_sq: f64,
    pub non_finite: u64,
    pub cand_used: u64,
    pub cand_cap: u64,
}

const _: () = assert!(std::mem::size_of::<GmChunk>() == 32);
const _: () = assert!(std::mem::size_of::<GmGroup>() == 104);
const _: () = assert!(std::mem::size_of::<GmStep>() == 32);

// SAFETY: plain #[repr(C)] structs of integers and floats, laid out as in gm_types.cuh.
unsafe impl DeviceRepr for GmChunk {}
// SAFETY: as above.
unsafe impl DeviceRepr for GmGroup {}
// SAFETY: as above.
unsafe impl DeviceRepr for GmStep {}
// SAFETY: all-zero bits are a valid value of every field.
unsafe impl ValidAsZeroBits for GmChunk {}
// SAFETY: as above.
unsafe impl ValidAsZeroBits for GmGroup {}
// SAFETY: as above.
unsafe impl ValidAsZeroBits for GmStep {}

#[cfg(test)]
mod tests {
    /// The header's static_asserts and these sizes must name the same numbers.
    #[test]
    fn header_asserts_the_same_sizes() {
        let header = include_str!("../../kernels/gm_types.cuh");
        for (name, size) in [
            ("GmChunk", std::mem::size_of::<super::GmChunk>()),
            ("GmGroup", std::mem::size_of::<super::GmGroup>()),
            ("GmStep", std::mem::size_of::<super::GmStep>()),
        ] {
            assert!(
                header.contains(&format!("static_assert(sizeof({name}) == {size},")),
                "{name}"
            );
        }
    }
}
