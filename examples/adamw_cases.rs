//! Writes cases for `scripts/adamw-host-check.sh`: inputs of the optimizer kernel's per-entry math
//! (`kernels/adamw_math.cuh`) with the CPU engine's outputs, as hex bits, one case a line. The
//! host build of the header must reproduce every output bit for bit.
//!
//! `cargo run --release --example adamw_cases -- cases.txt`

use gradmask::adamw::math::{grad_multiplier, masked_update, StepScalars};
use gradmask::rng::{draw, stochastic_round_bf16};
use gradmask::{AdamWConfig, MaskedUpdate};
use half::bf16;
use rand::{Rng, SeedableRng};

/// A float from one of several families: any bit pattern (NaN, Inf), denormals and zeros, and
/// ordinary, tiny and huge values.
fn any_f32(rng: &mut impl Rng) -> f32 {
    match rng.random_range(0..6) {
        0 => f32::from_bits(rng.random()), // any bits (NaN, Inf, denormals)
        1 => f32::from_bits(rng.random::<u32>() & 0x807f_ffff), // denormals and zeros
        2 => rng.random_range(-1.0f32..1.0),
        3 => rng.random_range(-1.0f32..1.0) * 1e-20,
        4 => rng.random_range(-1.0f32..1.0) * 1e20,
        _ => [0.0, -0.0, 1.0, f32::MAX, f32::MIN_POSITIVE, 3.3895314e38][rng.random_range(0..6)],
    }
}

/// 200K rng draws and bf16 roundings, 300K updates with random configs, steps and learning rates,
/// and 300K clipping factors.
fn main() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut out = String::new();
    for _ in 0..200_000 {
        let (key, index): (u64, u64) =
            (rng.random(), rng.random::<u64>() >> rng.random_range(0..64));
        out += &format!("draw {key:x} {index:x} {:x}\n", draw(key, index));
        let x = any_f32(&mut rng);
        let d: u32 = rng.random();
        out += &format!(
            "round {:x} {d:x} {:x} {:x}\n",
            x.to_bits(),
            bf16::from_f32(x).to_bits(),
            stochastic_round_bf16(x, d).to_bits()
        );
    }
    for _ in 0..300_000 {
        let config = AdamWConfig {
            beta1: rng.random_range(0.0..1.0),
            beta2: if rng.random() {
                0.999
            } else {
                rng.random_range(0.0..1.0)
            },
            eps: 10f64.powf(rng.random_range(-12.0..-2.0)),
            weight_decay: rng.random_range(0.0..0.2),
            grad_scale: Some(rng.random_range(0.5..4096.0)),
            max_grad_norm: Some(rng.random_range(1e-3..10.0)),
        };
        let sum_sq: f64 = 10f64.powf(rng.random_range(-30.0..30.0));
        let (grad_mul, _) = grad_multiplier(&config, sum_sq);
        let step = rng.random_range(1..10_000u64);
        let lr = 10f64.powf(rng.random_range(-6.0..-1.0));
        let s = StepScalars::new(&config, step, lr, grad_mul);
        let (p, g) = (any_f32(&mut rng), any_f32(&mut rng));
        let m = any_f32(&mut rng);
        let v = any_f32(&mut rng).abs();
        let keep: bool = rng.random();
        let freeze: bool = rng.random();
        let masked = if freeze {
            MaskedUpdate::Freeze
        } else {
            MaskedUpdate::ZeroGrad
        };
        let (p2, m2, v2) = masked_update(p, m, v, g, keep, masked, &s);
        let fields = [
            s.grad_mul,
            s.beta1,
            s.one_minus_beta1,
            s.beta2,
            s.one_minus_beta2,
            s.decay,
            s.step_size,
            s.inv_sqrt_bc2,
            s.eps,
        ];
        let fields: Vec<String> = fields
            .iter()
            .map(|f| format!("{:x}", f.to_bits()))
            .collect();
        out += &format!(
            "update {} {:x} {:x} {:x} {:x} {} {} {:x} {:x} {:x}\n",
            fields.join(" "),
            p.to_bits(),
            m.to_bits(),
            v.to_bits(),
            g.to_bits(),
            keep as u8,
            freeze as u8,
            p2.to_bits(),
            m2.to_bits(),
            v2.to_bits()
        );
        out += &format!(
            "clip {:x} {:x} {:x} {:x}\n",
            sum_sq.to_bits(),
            config.max_grad_norm.unwrap().to_bits(),
            config.grad_scale.unwrap().to_bits(),
            (grad_mul as f32).to_bits()
        );
    }
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "adamw_cases.txt".into());
    std::fs::write(&path, out).unwrap();
    eprintln!("wrote {path}");
}
