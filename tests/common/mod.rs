//! Shared by the tests and the benches: the sort-based oracle and seeded gradient distributions.
#![allow(dead_code)]

pub mod adamw_ref;

use gradmask::{DType, GradElem, GroupMap, Scope, TensorTable, KEEP_NONE};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Normal};

/// One group's expected outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub len: u64,
    pub target: u64,
    pub threshold_key: u32,
    pub kept: u64,
    pub non_finite: u64,
}

/// The obvious selection: collect each group's keys, sort, read the target-th largest.
pub fn oracle<T: GradElem>(
    table: &TensorTable,
    scope: Scope,
    grads: &[&[T]],
    mask_ratio: f64,
) -> Vec<Expected> {
    let map = GroupMap::new(table, scope);
    let mut keys: Vec<Vec<u32>> = vec![Vec::new(); map.n_groups()];
    for (tensor, grad) in grads.iter().enumerate() {
        if !table.dense()[tensor] {
            keys[map.group_of[tensor] as usize].extend(grad.iter().map(|x| x.key()));
        }
    }
    let non_finite_key = T::DTYPE.non_finite_key();
    keys.into_iter()
        .map(|mut group| {
            let len = group.len() as u64;
            let target = len - ((mask_ratio * len as f64).floor() as u64).min(len);
            let non_finite = group.iter().filter(|&&k| k >= non_finite_key).count() as u64;
            let threshold_key = if target == 0 {
                KEEP_NONE
            } else if mask_ratio == 0.0 {
                0
            } else {
                group.sort_unstable_by(|a, b| b.cmp(a));
                group[target as usize - 1]
            };
            let kept = group.iter().filter(|&&k| k >= threshold_key).count() as u64;
            Expected {
                len,
                target,
                threshold_key,
                kept,
                non_finite,
            }
        })
        .collect()
}

/// The gradient distributions every selection test covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dist {
    /// N(0, 1e-3).
    Normal,
    /// |g| log-uniform over 40 octaves, random sign.
    LogUniform40,
    /// Log-normal magnitudes like real LLM gradients.
    LogNormal,
    /// A handful of distinct values: many exact ties.
    Ties,
    /// Every entry 0 (some -0).
    Zeros,
    /// Subnormal values and zeros.
    Denormals,
    /// Normal with one huge outlier.
    Outlier,
    /// f32 values sharing their first 20 key bits.
    SharedLeadingBits,
}

pub const ALL_DISTS: [Dist; 8] = [
    Dist::Normal,
    Dist::LogUniform40,
    Dist::LogNormal,
    Dist::Ties,
    Dist::Zeros,
    Dist::Denormals,
    Dist::Outlier,
    Dist::SharedLeadingBits,
];

/// `len` seeded f32 draws from `dist`.
pub fn draw_f32(dist: Dist, len: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let sign = |rng: &mut StdRng, x: f32| if rng.random::<bool>() { x } else { -x };
    match dist {
        Dist::Normal => {
            let normal = Normal::new(0.0f32, 1e-3).unwrap();
            (0..len).map(|_| normal.sample(&mut rng)).collect()
        }
        Dist::LogUniform40 => (0..len)
            .map(|_| {
                let x = 2f32.powf(rng.random_range(-40.0f32..0.0)) * 8.0;
                sign(&mut rng, x)
            })
            .collect(),
        Dist::LogNormal => {
            let dist = LogNormal::new(-9.0f32, 1.5).unwrap();
            (0..len)
                .map(|_| {
                    let x = dist.sample(&mut rng);
                    sign(&mut rng, x)
                })
                .collect()
        }
        Dist::Ties => {
            let values = [0.0f32, 0.5, 1.0, 2.0, 1e-3];
            (0..len)
                .map(|_| {
                    let x = values[rng.random_range(0..values.len())];
                    sign(&mut rng, x)
                })
                .collect()
        }
        Dist::Zeros => (0..len).map(|_| sign(&mut rng, 0.0)).collect(),
        Dist::Denormals => (0..len)
            .map(|_| {
                let bits = if rng.random_range(0..8) == 0 {
                    0
                } else {
                    rng.random_range(1u32..0x0080_0000)
                };
                sign(&mut rng, f32::from_bits(bits))
            })
            .collect(),
        Dist::Outlier => {
            let normal = Normal::new(0.0f32, 1e-3).unwrap();
            let mut v: Vec<f32> = (0..len).map(|_| normal.sample(&mut rng)).collect();
            if len > 0 {
                let at = rng.random_range(0..len);
                v[at] = sign(&mut rng, 3.0e30);
            }
            v
        }
        Dist::SharedLeadingBits => {
            let base = 0x3c23_d70au32 & !0x7ff; // about 0.01, low 11 bits free
            (0..len)
                .map(|_| {
                    let x = f32::from_bits(base | rng.random_range(0u32..0x800));
                    sign(&mut rng, x)
                })
                .collect()
        }
    }
}

/// Converts f32 draws to the element type of a test.
pub trait FromF32: GradElem {
    fn from_f32(x: f32) -> Self;
}
impl FromF32 for f32 {
    fn from_f32(x: f32) -> Self {
        x
    }
}
impl FromF32 for bf16 {
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
}
impl FromF32 for f16 {
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
}

/// `len` seeded draws from `dist` in type `T`.
pub fn draw<T: FromF32>(dist: Dist, len: usize, seed: u64) -> Vec<T> {
    draw_f32(dist, len, seed)
        .into_iter()
        .map(T::from_f32)
        .collect()
}

/// The tensor shapes of a 1B-parameter Llama (Llama-3.2-1B: 16 layers, d = 2048, 32 heads with 8
/// KV heads of 64, MLP 8192, vocab 128256, tied embedding), each length divided by `scale`
/// (rounded up): one `(name, len)` per tensor, 146 in all.
pub fn llama_1b_shapes(scale: usize) -> Vec<(String, usize)> {
    let (d, kv, mlp, vocab, layers) = (2048usize, 512usize, 8192usize, 128_256usize, 16);
    let mut shapes = vec![("embed_tokens".to_string(), vocab * d)];
    for l in 0..layers {
        for (name, len) in [
            ("input_layernorm", d),
            ("q_proj", d * d),
            ("k_proj", d * kv),
            ("v_proj", d * kv),
            ("o_proj", d * d),
            ("post_attention_layernorm", d),
            ("gate_proj", d * mlp),
            ("up_proj", d * mlp),
            ("down_proj", mlp * d),
        ] {
            shapes.push((format!("layers.{l}.{name}"), len));
        }
    }
    shapes.push(("norm".to_string(), d));
    shapes
        .into_iter()
        .map(|(n, len)| (n, len.div_ceil(scale)))
        .collect()
}

/// The dtype's name for messages.
pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
    }
}
