//! The CUDA backend over cudarc 0.19, in three layers (as cudarc itself is built):
//! - [`types`]: `#[repr(C)]` mirrors of `kernels/gm_types.cuh`;
//! - [`module`]: the embedded fatbins, raw `unsafe` launches with a written contract;
//! - `pinned`: pinned host buffers that wait for their own copies (staging and stats);
//! - [`select`]: [`CudaSelector`], the safe selection on the caller's stream;
//! - [`adamw`]: [`CudaGmtAdamW`], selection plus the fused masked AdamW on the caller's stream.
//! - `launch`: the argument lists of the selection kernels, shared by both selectors;
//! - `shard`: `CudaSelector::sharded`, one rank of a sharded model;
//! - [`collective`]: [`DeviceCollective`], the all-reduce of sharded selection on the caller's
//!   stream, and (feature `nccl`) `NcclCollective` over NCCL.
//!
//! Every entry point returns a typed [`Error`]: [`Error::NoDriver`] where libcuda is missing,
//! [`Error::NoDevice`], [`Error::KernelsNotBuilt`] where this build has no kernels. Nothing panics.

pub mod adamw;
pub mod collective;
mod launch;
pub mod module;
mod pinned;
pub mod select;
mod shard;
pub mod types;

use std::sync::Arc;

pub use adamw::CudaGmtAdamW;
pub use collective::DeviceCollective;
#[cfg(feature = "nccl")]
pub use collective::NcclCollective;
pub use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
pub use module::KERNELS_BUILT;
pub use select::CudaSelector;

use crate::{Error, Result};

/// A context on device `ordinal`, after checking that the driver library exists (cudarc panics
/// when it is asked to load a missing libcuda).
pub fn context(ordinal: usize) -> Result<Arc<CudaContext>> {
    if !driver_present() {
        return Err(Error::NoDriver);
    }
    let count = CudaContext::device_count().map_err(|e| Error::NoDevice {
        ordinal,
        reason: format!("{e:?}"),
    })?;
    if ordinal >= count.max(0) as usize {
        return Err(Error::NoDevice {
            ordinal,
            reason: format!("the driver sees {count} device(s)"),
        });
    }
    CudaContext::new(ordinal).map_err(|e| Error::NoDevice {
        ordinal,
        reason: format!("{e:?}"),
    })
}

/// The default stream of device `ordinal`'s primary context, ready for the crate's kernels:
/// fails with `KernelsNotBuilt` on a build without them, before touching the driver.
pub fn default_stream(ordinal: usize) -> Result<Arc<CudaStream>> {
    if !KERNELS_BUILT {
        return Err(Error::KernelsNotBuilt);
    }
    Ok(context(ordinal)?.default_stream())
}

/// CUDA's limit on a grid's x dimension. The selection and update kernels launch one block per
/// work-list chunk, and `gm_refine_candidates` one row of blocks per selection group.
pub const MAX_GRID_X: usize = (1 << 31) - 1;

/// Rejects a work list of `chunks` chunks or `groups` selection groups that one launch cannot
/// cover (checked when a selector is built, so that no step fails half-way through its launches).
pub(crate) fn check_grid(chunks: usize, groups: usize) -> Result<()> {
    if chunks > MAX_GRID_X {
        return Err(Error::TooLarge(
            "more work-list chunks than a CUDA grid's x dimension holds (2^31 - 1)",
        ));
    }
    if groups > MAX_GRID_X {
        return Err(Error::TooLarge(
            "more selection groups than a CUDA grid's x dimension holds (2^31 - 1)",
        ));
    }
    Ok(())
}

/// Rejects raw device addresses that cannot be `size`-byte elements of tensors of `lengths`: a null
/// address for a non-empty tensor, or one not aligned to `size`. The error names the first tensor.
pub(crate) fn check_addresses(addresses: &[u64], lengths: &[usize], size: usize) -> Result<()> {
    let bad = |(&a, &len): (&u64, &usize)| (a == 0 && len > 0) || a % size as u64 != 0;
    match addresses.iter().zip(lengths).position(bad) {
        Some(tensor) => Err(Error::InvalidConfig {
            name: "device address",
            value: tensor as f64,
            expected:
                "a non-null address aligned to the element size (the value is the tensor index)",
        }),
        None => Ok(()),
    }
}

/// Whether libcuda can be used. cudarc loads it at run time in the crate's own build; the `cuda`
/// feature brings in candle's CUDA backend, which makes cudarc link it instead (so a process
/// without it does not start, and cudarc has no probe to call).
#[cfg(not(feature = "cuda"))]
fn driver_present() -> bool {
    // SAFETY: only tries to open the driver library by its usual names; no CUDA call is made.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

#[cfg(feature = "cuda")]
fn driver_present() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chunk count used to be checked against u32::MAX, a wider bound than the grid's x
    /// dimension that every launch puts it in (issue 11's "check in a wider type than the use").
    #[test]
    fn launch_sizes_stop_at_the_grid_limit() {
        assert!(check_grid(MAX_GRID_X, MAX_GRID_X).is_ok());
        assert!(check_grid(0, 0).is_ok());
        for (chunks, groups) in [
            (MAX_GRID_X + 1, 1),
            (1, MAX_GRID_X + 1),
            (u32::MAX as usize, 1),
        ] {
            assert!(
                matches!(check_grid(chunks, groups), Err(Error::TooLarge(_))),
                "{chunks} chunks, {groups} groups"
            );
        }
    }
}
