//! The optimizer on candle's CUDA device (`--features cuda`): the crate's `CudaGmtAdamW` steps the
//! model's own device buffers in place, on candle's stream. Nothing goes through the host: the
//! gradients are accumulated by candle on the device, the selection and the fused masked AdamW
//! read them where candle put them, and the update writes the weights inside the model's `Var`s.
//! The only device-to-host traffic of a step is the report (a few bytes per group).
//!
//! candle hands out its buffers through read guards only (`Tensor::storage_and_layout`), so the
//! step goes through `CudaGmtAdamW::step_raw_async` with the buffers' addresses; the contract it
//! asks for is argued where it is called.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{DType as CandleDType, Device, Layout, Storage, Tensor, Var};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use gradmask::cuda::CudaGmtAdamW;
use gradmask::{DType, GroupStats, Precision, StepReport, TensorTable, KEEP_NONE};

use crate::model::Llama;
use crate::optim::OptimSpec;

pub struct DeviceOptimizer {
    inner: CudaGmtAdamW,
    /// candle's stream for this device: `CU_STREAM_PER_THREAD`, so the stream of the thread that
    /// uses it. Everything here must run on the thread that built the optimizer (checked), the
    /// one that runs the model: only there are candle's work and ours ordered on one stream.
    stream: Arc<CudaStream>,
    thread: std::thread::ThreadId,
    /// The model's parameters, in table order (clones share the model's storage).
    vars: Vec<Var>,
    names: Vec<String>,
    /// The accumulated gradient of each parameter; None until a micro-batch gives it one.
    grads: Vec<Option<Tensor>>,
}

/// Whether `layout` covers a whole contiguous buffer of `len` entries from its start.
fn whole(layout: &Layout, len: usize) -> bool {
    layout.is_contiguous() && layout.start_offset() == 0 && layout.shape().elem_count() == len
}

/// The device address of `tensor`'s data, which must be a whole contiguous f32 buffer on the
/// CUDA device (`what` and `name` name it in the error).
fn address(
    storage: &Storage,
    layout: &Layout,
    stream: &Arc<CudaStream>,
    what: &str,
    name: &str,
) -> Result<u64> {
    let Some(slice) = f32_slice(storage) else {
        bail!("{what} {name}: not an f32 buffer on the CUDA device");
    };
    if !whole(layout, slice.len()) {
        bail!("{what} {name}: not a whole contiguous buffer (a view into a larger one)");
    }
    // The guard orders our stream after earlier users (candle's work is on this stream anyway).
    // It records a read, also for a parameter the kernel writes: harmless, since every use of
    // these buffers is on one stream (cudarc's events only order work across streams).
    Ok(slice.device_ptr(stream).0)
}

impl DeviceOptimizer {
    pub fn new(model: &Llama, table: TensorTable, spec: &OptimSpec) -> Result<Self> {
        let Device::Cuda(device) = &model.device else {
            bail!("the device optimizer needs the model on a CUDA device");
        };
        // candle runs the ops of a device on its per-thread stream; the optimizer joins it.
        let stream = device.cuda_stream();
        let mut inner = CudaGmtAdamW::new(stream.clone(), table, spec.adamw, spec.mask)
            .context("building the CUDA optimizer")?
            .with_mask_mode(spec.mode);
        if let Some(frozen) = &spec.frozen {
            inner.set_frozen(frozen)?;
        }
        Ok(DeviceOptimizer {
            inner,
            stream,
            thread: std::thread::current().id(),
            vars: model.params.iter().map(|p| p.var.clone()).collect(),
            names: model.params.iter().map(|p| p.name.clone()).collect(),
            grads: vec![None; model.params.len()],
        })
    }

    pub fn zero_grads(&mut self) {
        self.grads.iter_mut().for_each(|g| *g = None);
    }

    /// Adds a micro-batch's gradients on the device (candle ops, queued on the stream).
    pub fn accumulate(&mut self, _model: &Llama, store: &GradStore) -> Result<()> {
        self.check_thread()?;
        for (var, acc) in self.vars.iter().zip(self.grads.iter_mut()) {
            if let Some(g) = store.get(var.as_tensor()) {
                *acc = Some(match acc.take() {
                    None => g.clone(),
                    Some(sum) => (sum + g)?,
                });
            }
        }
        Ok(())
    }

    /// Makes every gradient a whole f32 buffer of its parameter's shape: zeros where a parameter
    /// got none, a copy where candle's gradient is a view into a larger buffer.
    fn whole_grads(&mut self) -> Result<()> {
        for (var, grad) in self.vars.iter().zip(self.grads.iter_mut()) {
            let fresh = match grad.take() {
                None => var.zeros_like()?,
                Some(g) if g.dtype() != CandleDType::F32 => g.to_dtype(CandleDType::F32)?,
                Some(g) if whole(g.layout(), storage_len(&g)) => g,
                Some(g) => g.affine(1.0, 0.0)?, // a new buffer of exactly the tensor's entries
            };
            *grad = Some(fresh);
        }
        Ok(())
    }

    /// Fails unless called from the thread that built the optimizer (see `stream`).
    fn check_thread(&self) -> Result<()> {
        if std::thread::current().id() != self.thread {
            bail!("the CUDA optimizer must be used from the thread that built it (candle's stream is per thread)");
        }
        Ok(())
    }

    /// One step on the accumulated gradients; waits for its report.
    pub fn step(&mut self, _model: &Llama, lr: f64) -> Result<StepReport> {
        self.check_thread()?;
        self.whole_grads()?;
        let params: Vec<_> = self
            .vars
            .iter()
            .map(|v| v.as_tensor().storage_and_layout())
            .collect();
        let grads = self
            .grads
            .iter()
            .map(|g| {
                Ok(g.as_ref()
                    .context("a gradient missing")?
                    .storage_and_layout())
            })
            .collect::<Result<Vec<_>>>()?;
        let mut p = Vec::with_capacity(params.len());
        let mut g = Vec::with_capacity(grads.len());
        for (i, ((ps, pl), (gs, gl))) in params.iter().zip(&grads).enumerate() {
            let name = &self.names[i];
            p.push(address(ps, pl, &self.stream, "parameter", name)?);
            g.push(address(gs, gl, &self.stream, "gradient of", name)?);
        }
        // SAFETY (step_raw_async's contract):
        // - lengths and device: `address` checked that each buffer is a whole contiguous f32
        //   buffer of its tensor's entries on candle's device, and the table was built from
        //   these tensors' element counts, in this order;
        // - no overlap: each parameter is its own `Var` with its own storage (a tied head is one
        //   parameter, not two), and gradients are tensors candle computed, never a parameter;
        // - lifetime and order: the read guards held until the launch is enqueued keep every
        //   storage alive and stop other code from swapping it; the gradients stay alive in
        //   `self.grads` until the next step (and `last_report` below waits for this one); and
        //   candle enqueues all later work of this thread (checked above to be the model's) on
        //   this same per-thread stream, after the update.
        unsafe {
            self.inner
                .step_raw_async(Precision::F32, DType::F32, &p, &g, lr, 0)?
        };
        drop((params, grads));
        Ok(self.inner.last_report()?)
    }

    /// Entries of tensor `index`'s accumulated gradient kept by `stats` (counted on the device).
    pub fn count_kept(&self, index: usize, stats: &GroupStats) -> Result<u64> {
        self.check_thread()?;
        let Some(g) = &self.grads[index] else {
            return Ok(0);
        };
        if stats.threshold_key == KEEP_NONE {
            return Ok(0);
        }
        // |g| >= threshold is `key >= threshold_key` for every non-NaN f32; a NaN skips the step,
        // and the trainer counts nothing on a skipped step.
        let kept = g.abs()?.ge(stats.threshold as f64)?;
        Ok(kept
            .to_dtype(CandleDType::U32)?
            .sum_all()?
            .to_scalar::<u32>()? as u64)
    }

    /// The weights, copied to the host.
    pub fn params(&self) -> Result<Vec<Vec<f32>>> {
        self.vars
            .iter()
            .map(|v| Ok(v.flatten_all()?.to_vec1::<f32>()?))
            .collect()
    }

    pub fn step_count(&mut self) -> Result<u64> {
        Ok(self.inner.step_count()?)
    }

    pub fn save(&mut self, path: &Path) -> gradmask::Result<()> {
        self.inner.save(path)
    }

    pub fn load(&mut self, path: &Path) -> gradmask::Result<()> {
        self.inner.load(path)
    }
}

/// The f32 device buffer behind a storage, if it is one.
fn f32_slice(storage: &Storage) -> Option<&CudaSlice<f32>> {
    match storage {
        Storage::Cuda(cuda) => cuda.as_cuda_slice::<f32>().ok(),
        _ => None,
    }
}

/// Entries in the buffer behind `tensor` (more than the tensor's own when it is a view).
fn storage_len(tensor: &Tensor) -> usize {
    f32_slice(&tensor.storage_and_layout().0).map_or(0, |s| s.len())
}
