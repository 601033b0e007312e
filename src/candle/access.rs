//! Mutable access to every var's buffer at once, in safe code, through candle's in-place ops.
//!
//! candle lends a tensor's storage mutably only inside an in-place op
//! ([`Tensor::inplace_op1`], which holds the storage's write lock for the call). A GMT step needs
//! every var at once (the selection is per group, possibly global), so the ops nest: the op on
//! var 0 lends its buffer and runs the op on var 1 inside, and so on; the innermost call has every
//! buffer and runs the step. Each level holds its var's write lock, so nothing else (a forward
//! pass on another thread, `Var::set`) touches the vars during the step. Nesting depth: one level
//! per var.
//!
//! Locks: the caller must make sure no var shares storage with another var or with a gradient
//! whose read guard it holds (checked from the buffers' addresses before locking), or a lock would
//! wait for itself.

use std::cell::{Cell, RefCell};

#[cfg(feature = "cuda")]
use candle_core::{cuda_backend::CudaDType, CudaStorage};
use candle_core::{CpuStorage, InplaceOp1, Layout, Var};
use half::bf16;

/// One var's buffer, lent for the step.
pub(super) enum Lent<'a, T> {
    Host(&'a mut [T]),
    #[cfg(feature = "cuda")]
    Device(cudarc::driver::CudaViewMut<'a, T>),
}

#[cfg(feature = "cuda")]
pub(super) trait DeviceElem: CudaDType + cudarc::driver::DeviceRepr {}
#[cfg(feature = "cuda")]
impl<T: CudaDType + cudarc::driver::DeviceRepr> DeviceElem for T {}
#[cfg(not(feature = "cuda"))]
pub(super) trait DeviceElem {}
#[cfg(not(feature = "cuda"))]
impl<T> DeviceElem for T {}

/// The element types the optimizer steps (f32; bf16 with f32 master weights), as candle stores
/// them, and the engine's step for each.
pub(super) trait Elem:
    crate::GradElem + candle_core::WithDType + bytemuck::Pod + DeviceElem
{
    fn host_mut(storage: &mut CpuStorage) -> Option<&mut Vec<Self>>;

    fn host_step(
        opt: &mut crate::GmtAdamW,
        params: &mut [&mut [Self]],
        grads: &[&[Self]],
        lr: f64,
    ) -> crate::Result<crate::StepReport>;

    /// Enqueues the CUDA engine's step of this precision.
    #[cfg(feature = "cuda")]
    fn device_step(
        opt: &mut crate::cuda::CudaGmtAdamW,
        params: &mut [cudarc::driver::CudaViewMut<'_, Self>],
        grads: &[cudarc::driver::CudaView<'_, Self>],
        lr: f64,
    ) -> crate::Result<()>;
}

impl Elem for f32 {
    fn host_mut(storage: &mut CpuStorage) -> Option<&mut Vec<f32>> {
        match storage {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }

    fn host_step(
        opt: &mut crate::GmtAdamW,
        params: &mut [&mut [f32]],
        grads: &[&[f32]],
        lr: f64,
    ) -> crate::Result<crate::StepReport> {
        opt.step(params, grads, lr)
    }

    #[cfg(feature = "cuda")]
    fn device_step(
        opt: &mut crate::cuda::CudaGmtAdamW,
        params: &mut [cudarc::driver::CudaViewMut<'_, f32>],
        grads: &[cudarc::driver::CudaView<'_, f32>],
        lr: f64,
    ) -> crate::Result<()> {
        opt.step_async(params, grads, lr)
    }
}

impl Elem for bf16 {
    fn host_mut(storage: &mut CpuStorage) -> Option<&mut Vec<bf16>> {
        match storage {
            CpuStorage::BF16(v) => Some(v),
            _ => None,
        }
    }

    fn host_step(
        opt: &mut crate::GmtAdamW,
        params: &mut [&mut [bf16]],
        grads: &[&[bf16]],
        lr: f64,
    ) -> crate::Result<crate::StepReport> {
        opt.step_bf16_master(params, grads, lr)
    }

    #[cfg(feature = "cuda")]
    fn device_step(
        opt: &mut crate::cuda::CudaGmtAdamW,
        params: &mut [cudarc::driver::CudaViewMut<'_, bf16>],
        grads: &[cudarc::driver::CudaView<'_, bf16>],
        lr: f64,
    ) -> crate::Result<()> {
        opt.step_bf16_master_async(params, grads, lr)
    }
}

type Inner<'f, T> = dyn FnMut(Vec<Lent<'_, T>>) + 'f;

/// Runs `f` on the buffers of every var (whole, contiguous, of element type `T`), each var's write
/// lock held for the call. Fails, without calling `f`, when a var is not a whole contiguous buffer
/// of `T` (candle's error).
pub(super) fn with_vars<T: Elem, R>(
    vars: &[Var],
    f: impl FnOnce(Vec<Lent<'_, T>>) -> R,
) -> candle_core::Result<R> {
    let mut f = Some(f);
    let mut out = None;
    let mut inner = |lent: Vec<Lent<'_, T>>| {
        if let Some(f) = f.take() {
            out = Some(f(lent));
        }
    };
    nest(vars, Vec::with_capacity(vars.len()), &mut inner)?;
    out.ok_or_else(|| candle_core::Error::Msg("the step did not run".into()))
}

fn nest<'a, 'f, T: Elem>(
    vars: &[Var],
    lent: Vec<Lent<'a, T>>,
    f: &mut Inner<'f, T>,
) -> candle_core::Result<()> {
    let Some((first, rest)) = vars.split_first() else {
        f(lent);
        return Ok(());
    };
    let level = Level {
        rest,
        lent: Cell::new(Some(lent)),
        f: RefCell::new(f),
    };
    first.as_tensor().inplace_op1(&level)
}

/// One level of the nest: lends its var's buffer and runs the rest inside.
struct Level<'v, 'a, 'r, 'f, T> {
    rest: &'v [Var],
    lent: Cell<Option<Vec<Lent<'a, T>>>>,
    f: RefCell<&'r mut Inner<'f, T>>,
}

impl<T> Level<'_, '_, '_, '_, T> {
    fn whole(layout: &Layout, len: usize) -> candle_core::Result<std::ops::Range<usize>> {
        match layout.contiguous_offsets() {
            Some((start, end)) if end <= len => Ok(start..end),
            _ => candle_core::bail!("gradmask: a var that is not a contiguous buffer"),
        }
    }
}

impl<T: Elem> InplaceOp1 for Level<'_, '_, '_, '_, T> {
    fn name(&self) -> &'static str {
        "gradmask-step"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let Some(data) = T::host_mut(storage) else {
            candle_core::bail!("gradmask: a var of another dtype than the step's");
        };
        let range = Self::whole(layout, data.len())?;
        let mut lent = self.lent.take().unwrap_or_default();
        lent.push(Lent::Host(&mut data[range]));
        nest(self.rest, lent, &mut **self.f.borrow_mut())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, storage: &mut CudaStorage, layout: &Layout) -> candle_core::Result<()> {
        let slice = <T as CudaDType>::as_cuda_slice_mut(storage)?;
        let range = Self::whole(layout, slice.len())?;
        let mut lent = self.lent.take().unwrap_or_default();
        lent.push(Lent::Device(slice.slice_mut(range)));
        nest(self.rest, lent, &mut **self.f.borrow_mut())
    }
}
