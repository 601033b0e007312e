//! Shared by the CUDA tests: the device (or why it is missing), uploads, and for
//! `tests/adamw_cuda.rs` one step on both engines for every precision combination, the
//! device state as bits, and report comparisons.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr};
use gradmask::cuda::{self, CudaGmtAdamW};
use gradmask::{AdamWConfig, GmtAdamW, GradElem, Result, StepReport};
use half::{bf16, f16};

use super::adamw_ref::{bits, State};
use super::FromF32;

/// The stochastic-rounding seed of every bf16-without-master step in these tests.
pub const ROUND_SEED: u64 = 0x5EED;

/// The AdamW configuration of the CUDA optimizer tests: weight decay and a gradient scale on.
pub fn config() -> AdamWConfig {
    AdamWConfig {
        weight_decay: 0.01,
        grad_scale: Some(4.0),
        ..AdamWConfig::default()
    }
}

/// The GPU's stream, or None after printing why the test skips.
pub fn gpu(test: &str) -> Option<Arc<CudaStream>> {
    match cuda::default_stream(0) {
        Ok(stream) => Some(stream),
        Err(e) => {
            eprintln!("skipping {test}: {e}");
            None
        }
    }
}

/// Whether `stream` is on the stand-in driver (`vgpu/`), which interprets the PTX on the CPU,
/// thousands of times slower than a GPU runs it: the largest cases shrink there, and say so.
pub fn emulated(stream: &Arc<CudaStream>) -> bool {
    stream
        .context()
        .name()
        .is_ok_and(|n| n.starts_with("gradmask-vgpu"))
}

/// `full` on a GPU, `emulated` on the stand-in driver.
pub fn sized<T>(stream: &Arc<CudaStream>, full: T, small: T) -> T {
    if emulated(stream) {
        small
    } else {
        full
    }
}

/// Device copies of host buffers (an empty tensor gets cudarc's empty buffer: some drivers reject
/// a zero-byte copy).
pub fn upload<T: DeviceRepr>(stream: &Arc<CudaStream>, host: &[Vec<T>]) -> Vec<CudaSlice<T>> {
    host.iter()
        .map(|h| {
            if h.is_empty() {
                stream.null().unwrap()
            } else {
                stream.clone_htod(h).unwrap()
            }
        })
        .collect()
}

/// Host copies of device buffers.
pub fn download<T: DeviceRepr + Default + Clone>(
    stream: &Arc<CudaStream>,
    device: &[CudaSlice<T>],
) -> Vec<Vec<T>> {
    device
        .iter()
        .map(|d| {
            if d.is_empty() {
                Vec::new()
            } else {
                stream.clone_dtoh(d).unwrap()
            }
        })
        .collect()
}

/// A parameter storage and gradient dtype, with the step call of each engine.
pub trait Combo {
    type P: FromF32 + DeviceRepr + Default + Into<f32> + Copy;
    type G: FromF32 + GradElem + DeviceRepr;
    const NAME: &'static str;
    fn cpu(
        opt: &mut GmtAdamW,
        p: &mut [&mut [Self::P]],
        g: &[&[Self::G]],
        lr: f64,
    ) -> Result<StepReport>;
    fn gpu(
        opt: &mut CudaGmtAdamW,
        p: &mut [CudaSlice<Self::P>],
        g: &[CudaSlice<Self::G>],
        lr: f64,
    ) -> Result<()>;
}

macro_rules! f32_combo {
    ($name:ident, $g:ty, $label:expr) => {
        /// f32 parameters with these gradients.
        pub struct $name;
        impl Combo for $name {
            type P = f32;
            type G = $g;
            const NAME: &'static str = $label;
            fn cpu(
                o: &mut GmtAdamW,
                p: &mut [&mut [f32]],
                g: &[&[$g]],
                lr: f64,
            ) -> Result<StepReport> {
                o.step(p, g, lr)
            }
            fn gpu(
                o: &mut CudaGmtAdamW,
                p: &mut [CudaSlice<f32>],
                g: &[CudaSlice<$g>],
                lr: f64,
            ) -> Result<()> {
                o.step_async(p, g, lr)
            }
        }
    };
}
f32_combo!(F32F32, f32, "f32 p, f32 g");
f32_combo!(F32Bf16, bf16, "f32 p, bf16 g");
f32_combo!(F32F16, f16, "f32 p, f16 g");

/// bf16 parameters with f32 master weights, bf16 gradients.
pub struct Master;
impl Combo for Master {
    type P = bf16;
    type G = bf16;
    const NAME: &'static str = "bf16 p + master, bf16 g";
    fn cpu(o: &mut GmtAdamW, p: &mut [&mut [bf16]], g: &[&[bf16]], lr: f64) -> Result<StepReport> {
        o.step_bf16_master(p, g, lr)
    }
    fn gpu(
        o: &mut CudaGmtAdamW,
        p: &mut [CudaSlice<bf16>],
        g: &[CudaSlice<bf16>],
        lr: f64,
    ) -> Result<()> {
        o.step_bf16_master_async(p, g, lr)
    }
}

/// bf16 parameters without master weights (stochastic rounding), bf16 gradients.
pub struct Stochastic;
impl Combo for Stochastic {
    type P = bf16;
    type G = bf16;
    const NAME: &'static str = "bf16 p stochastic, bf16 g";
    fn cpu(o: &mut GmtAdamW, p: &mut [&mut [bf16]], g: &[&[bf16]], lr: f64) -> Result<StepReport> {
        o.step_bf16_stochastic(p, g, lr, ROUND_SEED)
    }
    fn gpu(
        o: &mut CudaGmtAdamW,
        p: &mut [CudaSlice<bf16>],
        g: &[CudaSlice<bf16>],
        lr: f64,
    ) -> Result<()> {
        o.step_bf16_stochastic_async(p, g, lr, ROUND_SEED)
    }
}

/// Everything a step may change on the device, as bits (the CPU side is `adamw_ref::state`).
pub fn gpu_state<P: DeviceRepr + Default + Clone + Into<f32>>(
    opt: &mut CudaGmtAdamW,
    params: &[CudaSlice<P>],
) -> State {
    let stream = opt.stream().clone();
    let (m, v) = opt.moments_to_host().unwrap();
    State {
        params: download(&stream, params)
            .into_iter()
            .flatten()
            .map(|x| x.into().to_bits())
            .collect(),
        m: bits(&m),
        v: bits(&v),
        master: opt.master_to_host().unwrap().map(|x| bits(&x)),
        step: opt.step_count().unwrap(),
    }
}

/// `a` and `b` agree to `1e-9` relative (sums of squares added in another order), or are both
/// non-finite.
fn close_sum(a: f64, b: f64) -> bool {
    if a.is_finite() {
        (a - b).abs() <= 1e-9 * a.abs()
    } else {
        !b.is_finite()
    }
}

/// The reports agree: skip flag, step, per-group lengths, targets, kept counts, thresholds and
/// non-finite counts exactly; sums of squares and the norm to 1e-9 relative.
pub fn assert_same_report(want: &StepReport, got: &StepReport, what: &str) {
    assert_eq!(
        (want.skipped, want.step, want.groups.len()),
        (got.skipped, got.step, got.groups.len()),
        "{what}: skipped, step, groups"
    );
    for (g, (a, b)) in want.groups.iter().zip(&got.groups).enumerate() {
        assert_eq!(
            (a.len, a.target, a.kept, a.threshold_key, a.non_finite),
            (b.len, b.target, b.kept, b.threshold_key, b.non_finite),
            "{what}: group {g}"
        );
        assert_eq!(
            a.threshold.to_bits(),
            b.threshold.to_bits(),
            "{what}: group {g} threshold"
        );
        assert!(
            close_sum(a.sum_sq, b.sum_sq),
            "{what}: group {g} sum_sq {} vs {}",
            a.sum_sq,
            b.sum_sq
        );
    }
    assert!(
        close_sum(want.grad_norm, got.grad_norm),
        "{what}: norm {} vs {}",
        want.grad_norm,
        got.grad_norm
    );
}
