//! The CUDA engine on candle's CUDA backend (features `candle` and `cuda`): [`CudaGmtAdamW`] steps
//! candle's own device buffers in place, on candle's stream, through the typed (safe) step.
//!
//! - Vars: candle lends each var's `CudaSlice` mutably inside an in-place op (`access`), so the
//!   step borrows them as `CudaViewMut`s, with no raw address and no `unsafe`.
//! - Gradients: read where candle's backward (or `accumulate`) left them, as `CudaView`s of their
//!   storage, under read guards held until the step is enqueued.
//! - Order: every launch goes to candle's stream, after the backward that wrote the gradients and
//!   before whatever candle enqueues next; cudarc's event tracking orders other streams.
//!   `Device::new_cuda` gives candle's per-thread default stream, which is another stream on each
//!   thread: there the optimizer must be used on the thread that built it (checked).
//! - A step returns once it is enqueued, with no host synchronisation: the engine keeps its step
//!   counter on the device and uploads only its step plans and, since candle's gradient buffers
//!   move every step, the table of their addresses (8 B per var); see `CudaGmtAdamW`'s notes. The
//!   report (`last_report`) waits for the stream.

use std::sync::Arc;

use candle_core::cuda_backend::CudaDevice;
use candle_core::{Storage, Tensor, Var};
use cudarc::driver::{CudaStream, CudaView, DevicePtr};

use super::access::{with_vars, Elem, Lent};
use super::config::Config;
use super::{candle_err, var_err};
use crate::cuda::adamw::ranges::{first_overlap, Range};
use crate::cuda::CudaGmtAdamW;
use crate::{Result, TensorTable, VarProblem};

/// cudarc's handle of the per-thread default stream (`CU_STREAM_PER_THREAD`).
const PER_THREAD_STREAM: usize = 0x2;

pub(crate) struct DeviceEngine {
    pub(super) opt: CudaGmtAdamW,
    stream: Arc<CudaStream>,
    /// The building thread, when candle's stream is the per-thread default stream.
    thread: Option<std::thread::ThreadId>,
    /// Zeros for the vars without a gradient (the largest var's length), made on first use.
    zeros: Option<Tensor>,
    /// The frozen flags the engine holds: the config's, plus the vars without a gradient.
    frozen: Vec<bool>,
    wanted: Vec<bool>,
    addresses: (Vec<u64>, Vec<u64>),
    ranges: Vec<Range>,
}

impl DeviceEngine {
    pub(super) fn new(device: &CudaDevice, table: TensorTable, config: &Config) -> Result<Self> {
        let stream = device.cuda_stream();
        let n = table.len();
        let opt = CudaGmtAdamW::new(stream.clone(), table, config.adamw, config.mask)?
            .with_mask_mode(config.mode);
        let per_thread = stream.cu_stream() as usize == PER_THREAD_STREAM;
        Ok(DeviceEngine {
            opt,
            stream,
            thread: per_thread.then(|| std::thread::current().id()),
            zeros: None,
            frozen: vec![false; n],
            wanted: vec![false; n],
            addresses: (vec![0; n], vec![0; n]),
            ranges: Vec::with_capacity(n),
        })
    }

    /// Enqueues one step of the vars on `grads` (checked as on the CPU); a var without a
    /// gradient is frozen for this step. A rejected step enqueues nothing and changes nothing.
    pub(super) fn step<T: Elem>(
        &mut self,
        vars: &[Var],
        names: &[String],
        grads: &[Option<Tensor>],
        fixed_frozen: &[bool],
        lr: f64,
    ) -> Result<()> {
        if self
            .thread
            .is_some_and(|t| t != std::thread::current().id())
        {
            return Err(var_err(
                names.first().map_or("", String::as_str),
                VarProblem::Thread,
            ));
        }
        let lengths = self.opt.table().lengths().to_vec();
        let longest = lengths.iter().copied().max().unwrap_or(0);
        if grads.iter().any(Option::is_none)
            && self.zeros.as_ref().is_none_or(|z| z.elem_count() < longest)
        {
            let device = vars[0].device();
            self.zeros = Some(
                Tensor::zeros(longest, <T as candle_core::WithDType>::DTYPE, device)
                    .map_err(candle_err)?,
            );
        }
        let zeros = self.zeros.as_ref().map(Tensor::storage_and_layout);
        let guards: Vec<_> = grads
            .iter()
            .map(|g| g.as_ref().map(Tensor::storage_and_layout))
            .collect();
        let mut views: Vec<CudaView<'_, T>> = Vec::with_capacity(grads.len());
        for (i, guard) in guards.iter().enumerate() {
            views.push(match (guard, &zeros) {
                (Some((storage, layout)), _) => device_view(storage, layout, &names[i])?,
                (None, Some((storage, _))) => device_view::<T>(
                    storage,
                    &candle_core::Layout::contiguous(longest),
                    &names[i],
                )?
                .slice(..lengths[i]),
                (None, None) => unreachable!("zeros are made when a gradient is missing"),
            });
        }
        for (i, var) in vars.iter().enumerate() {
            let (storage, layout) = var.storage_and_layout();
            let view = device_view::<T>(&storage, layout, &names[i])?;
            self.addresses.0[i] = view.device_ptr(&self.stream).0;
            self.addresses.1[i] = views[i].device_ptr(&self.stream).0;
        }
        let (params, grad_addresses) = &self.addresses;
        let size = std::mem::size_of::<T>();
        if let Some(t) = first_overlap(
            params,
            grad_addresses,
            &lengths,
            (size, size),
            &mut self.ranges,
        ) {
            let other = "another var or a gradient".to_string();
            return Err(var_err(&names[t], VarProblem::Shared { other }));
        }
        for ((wanted, &fixed), grad) in self.wanted.iter_mut().zip(fixed_frozen).zip(grads) {
            *wanted = fixed || grad.is_none();
        }
        if self.wanted != self.frozen {
            // Re-uploads the engine's small table of parameter tensors on the next step only.
            self.opt.set_frozen(&self.wanted)?;
            self.frozen.copy_from_slice(&self.wanted);
        }
        let opt = &mut self.opt;
        with_vars::<T, _>(vars, |lent| {
            let mut params: Vec<_> = lent
                .into_iter()
                .map(|l| match l {
                    Lent::Device(view) => view,
                    Lent::Host(_) => unreachable!("the device engine steps CUDA vars"),
                })
                .collect();
            T::device_step(opt, &mut params, &views, lr)
        })
        .map_err(candle_err)?
    }
}

/// The contiguous data of a tensor on candle's CUDA device, of element type `T`.
fn device_view<'s, T: Elem>(
    storage: &'s Storage,
    layout: &candle_core::Layout,
    name: &str,
) -> Result<CudaView<'s, T>> {
    let slice = match storage {
        Storage::Cuda(cuda) => cuda.as_cuda_slice::<T>().ok(),
        _ => None,
    };
    match (slice, layout.contiguous_offsets()) {
        (Some(slice), Some((start, end))) if end <= slice.len() => Ok(slice.slice(start..end)),
        _ => Err(var_err(
            name,
            VarProblem::Gradient {
                got: "not a contiguous CUDA buffer of the var's dtype".to_string(),
                expected: "a contiguous buffer on the var's CUDA device".to_string(),
            },
        )),
    }
}
