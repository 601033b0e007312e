//! `#[repr(C)]` mirrors of `kernels/gm_types.cuh`. Field order, types and sizes must match; both
//! sides assert the sizes.

use cudarc::driver::{DeviceRepr, ValidAsZeroBits};

/// Selection stages of a group between passes (`GM_STAGE_*`).
pub const STAGE_DONE: u32 = 0;

/// One entry of the device work list: at most `GPU_CHUNK_LEN` entries of one tensor. It holds no
/// address: the kernels read the chunk's gradients at `d_grads[tensor] + start`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GmChunk {
    /// The chunk's first entry in its tensor's (local) gradient buffer, in elements.
    pub start: u64,
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

/// One parameter tensor of the optimizer: where its state lives (`kernels/adamw.cu`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GmParamTensor {
    /// Device address of the tensor's first parameter (f32 or bf16).
    pub d_param: u64,
    /// Its first and second moments (f32), 16-byte aligned.
    pub d_m: u64,
    pub d_v: u64,
    /// Its f32 master weights (0 without), 16-byte aligned.
    pub d_master: u64,
    /// Global index of its first entry (`TensorTable::offsets`).
    pub first: u64,
    /// 1: never updated.
    pub frozen: u32,
    pub pad: u32,
}

/// `GmAdamWArgs.keep_rule`: GMT, `key(g) >= threshold_key` of the group.
pub const KEEP_THRESHOLD: u32 = 0;
/// `GmAdamWArgs.keep_rule`: the random baseline, `draw(random_key, index) >= random_cut`.
pub const KEEP_RANDOM: u32 = 1;

/// The optimizer kernel's arguments besides the [`StepScalars`](crate::adamw::math::StepScalars),
/// which the kernel takes as `GmStepScalars` (same layout).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GmAdamWArgs {
    pub random_key: u64,
    pub random_cut: u64,
    pub round_key: u64,
    pub max_grad_norm: f64,
    pub grad_scale: f64,
    pub keep_rule: u32,
    pub freeze: u32,
    pub clip: u32,
    pub init_master: u32,
}

/// One candidate plan of an optimizer step (`GmStepPlan`): its scalars and arguments if it is the
/// t-th step taken (`src/cuda/adamw/plan.rs`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GmStepPlan {
    pub scalars: crate::adamw::math::StepScalars,
    /// Set by `gm_step_plan` in the picked copy when the device's count was outside the window.
    pub missed: u32,
    pub args: GmAdamWArgs,
}

/// The device's count of steps taken, and of steps whose plan window missed it (`GmStepCount`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct GmStepCount {
    pub taken: u64,
    pub missed: u64,
}

const _: () = assert!(std::mem::size_of::<GmChunk>() == 32);
const _: () = assert!(std::mem::size_of::<GmGroup>() == 104);
const _: () = assert!(std::mem::size_of::<GmStep>() == 32);
const _: () = assert!(std::mem::size_of::<GmParamTensor>() == 48);
const _: () = assert!(std::mem::size_of::<GmAdamWArgs>() == 56);
const _: () = assert!(std::mem::size_of::<GmStepPlan>() == 96);
const _: () = assert!(std::mem::size_of::<GmStepCount>() == 16);
const _: () = assert!(std::mem::size_of::<crate::adamw::math::StepScalars>() == 36);
const _: () = assert!(std::mem::align_of::<crate::adamw::math::StepScalars>() == 4);

// SAFETY: plain #[repr(C)] structs of integers and floats, laid out as in gm_types.cuh.
unsafe impl DeviceRepr for GmChunk {}
// SAFETY: as above.
unsafe impl DeviceRepr for GmGroup {}
// SAFETY: as above.
unsafe impl DeviceRepr for GmStep {}
// SAFETY: as above.
unsafe impl DeviceRepr for GmParamTensor {}
// SAFETY: as above.
unsafe impl DeviceRepr for GmStepPlan {}
// SAFETY: as above.
unsafe impl DeviceRepr for GmStepCount {}
// SAFETY: all-zero bits are a valid value of every field.
unsafe impl ValidAsZeroBits for GmChunk {}
// SAFETY: as above.
unsafe impl ValidAsZeroBits for GmStepPlan {}
// SAFETY: as above.
unsafe impl ValidAsZeroBits for GmStepCount {}
// SAFETY: as above.
unsafe impl ValidAsZeroBits for GmParamTensor {}
// SAFETY: as above.
unsafe impl ValidAsZeroBits for GmGroup {}
// SAFETY: as above.
unsafe impl ValidAsZeroBits for GmStep {}

#[cfg(test)]
mod tests {
    use crate::adamw::math::StepScalars;
    use std::mem::offset_of;

    /// The kernel reads StepScalars as GmStepScalars: the same f32 fields in the same order.
    #[test]
    fn step_scalars_fields_follow_the_header() {
        let header = include_str!("../../kernels/gm_types.cuh");
        let body = header.split("struct GmStepScalars {").nth(1).unwrap();
        let body = body.split("};").next().unwrap();
        let fields: Vec<&str> = body
            .lines()
            .filter_map(|l| l.trim().strip_prefix("float "))
            .map(|l| l.split(';').next().unwrap())
            .collect();
        let rust = [
            ("grad_mul", offset_of!(StepScalars, grad_mul)),
            ("beta1", offset_of!(StepScalars, beta1)),
            ("one_minus_beta1", offset_of!(StepScalars, one_minus_beta1)),
            ("beta2", offset_of!(StepScalars, beta2)),
            ("one_minus_beta2", offset_of!(StepScalars, one_minus_beta2)),
            ("decay", offset_of!(StepScalars, decay)),
            ("step_size", offset_of!(StepScalars, step_size)),
            ("inv_sqrt_bc2", offset_of!(StepScalars, inv_sqrt_bc2)),
            ("eps", offset_of!(StepScalars, eps)),
        ];
        assert_eq!(fields.len(), rust.len());
        for (i, (field, (name, offset))) in fields.iter().zip(rust).enumerate() {
            assert_eq!((*field, offset), (name, 4 * i));
        }
    }

    /// The header's static_asserts and these sizes must name the same numbers.
    #[test]
    fn header_asserts_the_same_sizes() {
        let header = include_str!("../../kernels/gm_types.cuh");
        for (name, size) in [
            ("GmChunk", std::mem::size_of::<super::GmChunk>()),
            ("GmGroup", std::mem::size_of::<super::GmGroup>()),
            ("GmStep", std::mem::size_of::<super::GmStep>()),
            ("GmParamTensor", std::mem::size_of::<super::GmParamTensor>()),
            ("GmAdamWArgs", std::mem::size_of::<super::GmAdamWArgs>()),
            ("GmStepPlan", std::mem::size_of::<super::GmStepPlan>()),
            ("GmStepCount", std::mem::size_of::<super::GmStepCount>()),
            (
                "GmStepScalars",
                std::mem::size_of::<crate::adamw::math::StepScalars>(),
            ),
        ] {
            assert!(
                header.contains(&format!("static_assert(sizeof({name}) == {size},")),
                "{name}"
            );
        }
    }
}
