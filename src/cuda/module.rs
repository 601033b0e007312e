//! The raw layer: the embedded fatbins loaded into a context, their functions, and launches with
//! the argument array built on the stack (no allocation per launch).

use std::ffi::{c_void, CString};
use std::sync::Arc;

use cudarc::driver::{result, sys, CudaContext};

use crate::{Error, Result};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

/// True when this build embeds the CUDA kernels (nvcc was found, or prebuilt kernels were given).
pub const KERNELS_BUILT: bool = cfg!(gradmask_kernels);

/// The fatbin of kernel file `name` (`kernels/<name>.cu`), if this build has it.
pub fn kernel_image(name: &str) -> Option<&'static [u8]> {
    embedded::KERNELS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, image)| *image)
}

/// One loaded kernel file: its module and the functions looked up in it.
pub struct Module {
    ctx: Arc<CudaContext>,
    module: sys::CUmodule,
}

// SAFETY: a CUmodule handle may be used from any thread once its context is bound there; every
// use below binds the context first.
unsafe impl Send for Module {}
// SAFETY: as above; the handle is only read.
unsafe impl Sync for Module {}

impl Module {
    /// Loads `kernels/<name>.cu`'s fatbin into `ctx`: the embedded one, or
    /// `$GRADMASK_KERNELS_DIR/<name>.fatbin` where that file exists (kernel development: a kernel
    /// variant without rebuilding the crate; the planted-defect tests use it).
    pub fn load(ctx: &Arc<CudaContext>, name: &str) -> Result<Self> {
        let replacement = std::env::var_os("GRADMASK_KERNELS_DIR")
            .map(|dir| std::path::Path::new(&dir).join(format!("{name}.fatbin")))
            .filter(|path| path.is_file());
        let owned = match &replacement {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                Error::Cuda(format!(
                    "GRADMASK_KERNELS_DIR: cannot read {}: {e}",
                    path.display()
                ))
            })?),
            None => None,
        };
        let image = match &owned {
            Some(bytes) => &bytes[..],
            None => kernel_image(name).ok_or(Error::KernelsNotBuilt)?,
        };
        // cuModuleLoadData reads a fatbin from a pointer; the image must be 8-byte aligned and
        // include_bytes! gives no alignment, so copy it into a u64 buffer first.
        let mut aligned = vec![0u64; image.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut aligned)[..image.len()].copy_from_slice(image);
        ctx.bind_to_thread().map_err(cuda)?;
        // SAFETY: `aligned` holds a complete fatbin produced by nvcc and outlives the call; the
        // context is bound to this thread.
        let module = unsafe { result::module::load_data(aligned.as_ptr() as *const c_void) }
            .map_err(cuda)?;
        Ok(Module {
            ctx: ctx.clone(),
            module,
        })
    }

    /// The function `name` of this module.
    pub fn function(&self, name: &str) -> Result<Function> {
        let c_name = CString::new(name).expect("kernel names have no NUL");
        self.ctx.bind_to_thread().map_err(cuda)?;
        // SAFETY: the module is loaded in the bound context and stays loaded while `self` lives;
        // callers keep the Module alive beside its Functions.
        let raw = unsafe { result::module::get_function(self.module, c_name) }.map_err(cuda)?;
        Ok(Function { raw })
    }
}

impl Drop for Module {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: the module was loaded by `load` in this context, and no Function of it is
            // used after its Module is dropped (they live in the same struct).
            let _ = unsafe { result::module::unload(self.module) };
        }
    }
}

/// A kernel handle (valid while its `Module` lives).
#[derive(Clone, Copy)]
pub struct Function {
    raw: sys::CUfunction,
}

// SAFETY: CUfunction handles are immutable and usable from any thread with the context bound.
unsafe impl Send for Function {}
// SAFETY: as above.
unsafe impl Sync for Function {}

impl Function {
    /// Enqueues the kernel on `stream` with `GM_BLOCK_THREADS`-thread blocks. A grid with a zero
    /// dimension launches nothing.
    ///
    /// # Safety
    /// `params` must point at one value per kernel parameter, in order and of the parameter's
    /// type; every device address among them must stay valid, and not be written by anyone else,
    /// until the kernel has run on `stream`. The stream's context must be bound to this thread.
    pub unsafe fn launch(
        &self,
        stream: sys::CUstream,
        grid: (u32, u32, u32),
        params: &mut [*mut c_void],
    ) -> Result<()> {
        if grid.0 == 0 || grid.1 == 0 || grid.2 == 0 {
            return Ok(());
        }
        let block = (crate::tuning::BLOCK_THREADS, 1, 1);
        // SAFETY: forwarded to the caller's contract above.
        unsafe { result::launch_kernel(self.raw, grid, block, 0, stream, params) }.map_err(cuda)
    }
}

/// Converts a driver error into the crate's error.
pub fn cuda(err: impl std::fmt::Debug) -> Error {
    Error::Cuda(format!("{err:?}"))
}
