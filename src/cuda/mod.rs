//! The CUDA backend over cudarc 0.19, in three layers (as cudarc itself is built):
//! - [`types`]: `#[repr(C)]` mirrors of `kernels/gm_types.cuh`;
//! - [`module`]: the embedded fatbins, raw `unsafe` launches with a written contract;
//! - `pinned`: pinned host buffers that wait for their own copies (staging and stats);
//! - [`select`]: [`CudaSelector`], the safe selection on the caller's stream;
//! - [`adamw`]: [`CudaGmtAdamW`], selection plus the fused masked AdamW on the caller's stream.
//!
//! Every entry point returns a typed [`Error`]: [`Error::NoDriver`] where libcuda is missing,
//! [`Error::NoDevice`], [`Error::KernelsNotBuilt`] where this build has no kernels. Nothing panics.

pub mod adamw;
pub mod module;
mod pinned;
pub mod select;
pub mod types;

use std::sync::Arc;

pub use adamw::CudaGmtAdamW;
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
