//! `step_raw_async` (buffers as raw device addresses, as the candle trainer passes them): the same
//! bits as the CPU engine for every precision, and typed rejections that change nothing (part of
//! `tests/adamw_cuda.rs`).

use std::marker::PhantomData;

use super::*;
use common::cuda_steps::ROUND_SEED;
use cudarc::driver::{CudaSlice, DevicePtr};
use gradmask::{DType, GradElem, Precision, Result};

/// A precision combination whose GPU step goes through `step_raw_async`.
struct Raw<C>(PhantomData<C>);

trait Typed: Combo {
    const PRECISION: Precision;
}
impl Typed for F32F32 {
    const PRECISION: Precision = Precision::F32;
}
impl Typed for F32Bf16 {
    const PRECISION: Precision = Precision::F32;
}
impl Typed for F32F16 {
    const PRECISION: Precision = Precision::F32;
}
impl Typed for Master {
    const PRECISION: Precision = Precision::Bf16Master;
}
impl Typed for Stochastic {
    const PRECISION: Precision = Precision::Bf16Stochastic;
}

fn addresses<T>(stream: &Arc<CudaStream>, buffers: &[CudaSlice<T>]) -> Vec<u64> {
    buffers.iter().map(|b| b.device_ptr(stream).0).collect()
}

impl<C: Typed> Combo for Raw<C> {
    type P = C::P;
    type G = C::G;
    const NAME: &'static str = "raw addresses";
    fn cpu(o: &mut GmtAdamW, p: &mut [&mut [C::P]], g: &[&[C::G]], lr: f64) -> Result<StepReport> {
        C::cpu(o, p, g, lr)
    }
    fn gpu(
        o: &mut CudaGmtAdamW,
        p: &mut [CudaSlice<C::P>],
        g: &[CudaSlice<C::G>],
        lr: f64,
    ) -> Result<()> {
        let stream = o.stream().clone();
        let (params, grads) = (addresses(&stream, p), addresses(&stream, g));
        // SAFETY: the buffers are the table's lengths on this stream's device, distinct, and
        // borrowed until the caller has read the state back (which waits for the stream).
        unsafe { o.step_raw_async(C::PRECISION, C::G::DTYPE, &params, &grads, lr, ROUND_SEED) }
    }
}

#[test]
fn raw_steps_match_the_cpu_bit_for_bit() {
    let Some(stream) = gpu("raw_steps_match_the_cpu_bit_for_bit") else {
        return;
    };
    for (ratio, scope, masked) in [
        (0.0, Scope::PerTensor, MaskedUpdate::ZeroGrad),
        (0.3, Scope::Groups, MaskedUpdate::Freeze),
        (0.9, Scope::Global, MaskedUpdate::ZeroGrad),
    ] {
        let case = Case::gmt(ratio, scope, masked);
        let what = format!("GMT r={ratio} {scope:?} {masked:?}");
        run::<Raw<F32F32>>(&stream, &case, &what);
        run::<Raw<F32Bf16>>(&stream, &case, &what);
        run::<Raw<Master>>(&stream, &case, &what);
        run::<Raw<Stochastic>>(&stream, &case, &what);
        let f16_case = Case {
            dists: &F16_DISTS,
            ..Case::gmt(ratio, scope, masked)
        };
        run::<Raw<F32F16>>(&stream, &f16_case, &what);
    }
    let random = Case {
        mode: MaskMode::Random { seed: 11 },
        frozen: Some(vec![false, true, false, false, true, false, false]),
        poison: vec![(1, f32::NAN)],
        ..Case::gmt(0.4, Scope::Groups, MaskedUpdate::ZeroGrad)
    };
    run::<Raw<F32F32>>(&stream, &random, "random mask, frozen tensors, a NaN step");
}

/// Gradient dtype, precision and lr of a raw step.
type RawStep = (DType, Precision, f64);

#[test]
fn raw_rejections_are_typed_and_change_nothing() {
    let Some(stream) = gpu("raw_rejections_are_typed_and_change_nothing") else {
        return;
    };
    let case = Case::gmt(0.3, Scope::PerTensor, MaskedUpdate::ZeroGrad);
    let (_, mut opt) = engines(&stream, &case);
    let params = upload(&stream, &draw_params(&LENGTHS, 1));
    let grads = upload(&stream, &draw_grads::<f32>(&LENGTHS, &DISTS, 7, 0));
    let (p, g) = (addresses(&stream, &params), addresses(&stream, &grads));
    // SAFETY (every call below): the addresses are live buffers of the table's lengths on this
    // device, borrowed until the end of the test, and only read back after a synchronize.
    unsafe { opt.step_raw_async(Precision::F32, DType::F32, &p, &g, 1e-3, 0) }.unwrap();
    let before = gpu_state(&mut opt, &params);
    let short = &p[..p.len() - 1];
    let mut null = p.clone();
    null[1] = 0; // tensor 1 has one entry
    let mut odd = p.clone();
    odd[2] += 2; // not a multiple of 4 bytes
    let mut shared = p.clone();
    shared[5] = shared[6]; // two parameters in one buffer
    let mut onto_grad = p.clone();
    onto_grad[4] = g[4]; // a parameter written over a gradient
    let f32_step = (DType::F32, Precision::F32, 1e-3);
    let bad: [(&str, &[u64], RawStep); 7] = [
        ("short parameter list", short, f32_step),
        ("null address", &null, f32_step),
        ("misaligned address", &odd, f32_step),
        ("overlapping parameters", &shared, f32_step),
        ("parameter over a gradient", &onto_grad, f32_step),
        ("NaN lr", &p, (DType::F32, Precision::F32, f64::NAN)),
        (
            "another precision",
            &p,
            (DType::BF16, Precision::Bf16Master, 1e-3),
        ),
    ];
    for (what, params_at, (dtype, precision, lr)) in bad {
        let got = unsafe { opt.step_raw_async(precision, dtype, params_at, &g, lr, 0) };
        match (what, got) {
            ("short parameter list", Err(Error::CountMismatch { .. }))
            | (
                "null address"
                | "misaligned address"
                | "overlapping parameters"
                | "parameter over a gradient",
                Err(Error::InvalidConfig {
                    name: "device address",
                    ..
                }),
            )
            | ("NaN lr", Err(Error::InvalidConfig { name: "lr", .. }))
            | ("another precision", Err(Error::PrecisionMismatch { .. })) => {}
            (what, got) => panic!("{what}: expected a typed rejection, got {got:?}"),
        }
        assert_eq!(
            gpu_state(&mut opt, &params),
            before,
            "{what} changed the state"
        );
    }
    // bf16 parameters take bf16 gradients only (checked before the precision is fixed).
    let (_, mut fresh) = engines(&stream, &case);
    let got = unsafe { fresh.step_raw_async(Precision::Bf16Master, DType::F16, &p, &g, 1e-3, 0) };
    assert!(
        matches!(
            got,
            Err(Error::InvalidConfig {
                name: "gradient dtype",
                ..
            })
        ),
        "{got:?}"
    );
    assert_eq!(fresh.step_count().unwrap(), 0);
}
