//! Shared by the tests and the benches: the sort-based oracle and seeded gradient distributions.
#![allow(dead_code)]

pub mod adamw_ref;
#[cfg(feature = "candle")]
pub mod candle_vars;
pub mod cuda_shards;
pub mod cuda_steps;
pub mod f32_limits;
pub mod shard_steps;
pub mod shards;

use std::path::PathBuf;

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
    llama_shapes(2048, 512, 8192, 128_256, 16, false, scale)
}

/// The tensor shapes of a 7B Llama (Llama-2-7B: 32 layers, d = 4096, 32 heads, MLP 11008, vocab
/// 32000, untied head), each length divided by `scale` (rounded up): 291 tensors.
pub fn llama_7b_shapes(scale: usize) -> Vec<(String, usize)> {
    llama_shapes(4096, 4096, 11008, 32_000, 32, true, scale)
}

/// A Llama's tensors: width `d`, K/V projections of `kv` outputs, MLP width `mlp`, `vocab`,
/// `layers`, an untied `lm_head` or not; lengths divided by `scale` (rounded up).
fn llama_shapes(
    d: usize,
    kv: usize,
    mlp: usize,
    vocab: usize,
    layers: usize,
    head: bool,
    scale: usize,
) -> Vec<(String, usize)> {
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
    if head {
        shapes.push(("lm_head".to_string(), vocab * d));
    }
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

/// The obvious per-tensor selection, the baseline of `cargo bench --bench select`: copy |g| of each
/// tensor, then `select_nth_unstable` for the target-th largest. Returns each tensor's threshold
/// key (as the oracle defines it).
pub fn naive_per_tensor_thresholds<T: GradElem>(
    grads: &[&[T]],
    mask_ratio: f64,
    scratch: &mut Vec<u32>,
) -> Vec<u32> {
    grads
        .iter()
        .map(|grad| {
            let len = grad.len() as u64;
            let target = len - ((mask_ratio * len as f64).floor() as u64).min(len);
            if target == 0 {
                return KEEP_NONE;
            }
            if mask_ratio == 0.0 {
                return 0;
            }
            scratch.clear();
            scratch.extend(grad.iter().map(|x| x.key()));
            let at = (len - target) as usize; // ascending position of the target-th largest
            *scratch.select_nth_unstable(at).1
        })
        .collect()
}

/// Seeded log-normal gradients (realistic LLM magnitudes, random sign) for every shape, generated
/// in parallel.
pub fn llama_gradients(shapes: &[(String, usize)], seed: u64) -> Vec<Vec<f32>> {
    use rayon::prelude::*;
    shapes
        .par_iter()
        .enumerate()
        .map(|(i, (_, len))| {
            draw_f32(
                Dist::LogNormal,
                *len,
                seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
            )
        })
        .collect()
}

/// A 32-bit integer mix (the murmur3 finalizer on a golden-ratio multiple), written so that
/// `scripts/peers/torch_select.py` reproduces it with int64 tensor arithmetic.
pub fn mix32(x: u64) -> u32 {
    let mut h = (x.wrapping_mul(0x9E37_79B1) & 0xFFFF_FFFF) as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^ (h >> 16)
}

/// Gradients that any peer can regenerate bit for bit: entry `i` of the whole set (global index)
/// has exponent `100 + mix32(2i) % 40` (40 octaves, about 1e-8 to 1e4), mantissa `mix32(2i+1)`'s
/// low 23 bits and sign its top bit.
pub fn hash_gradients(lengths: &[usize]) -> Vec<Vec<f32>> {
    use rayon::prelude::*;
    let mut offsets = vec![0u64];
    for &n in lengths {
        offsets.push(offsets.last().unwrap() + n as u64);
    }
    lengths
        .par_iter()
        .zip(offsets.par_iter())
        .map(|(&n, &offset)| {
            (offset..offset + n as u64)
                .map(|i| {
                    let (a, b) = (mix32(2 * i), mix32(2 * i + 1));
                    f32::from_bits((b & 0x8000_0000) | ((100 + a % 40) << 23) | (b & 0x007F_FFFF))
                })
                .collect()
        })
        .collect()
}

/// Wall time of `iters` calls of `f` on the GPU, from a synchronized start to a synchronized end
/// (the benches' CUDA timer).
pub fn gpu_time(
    stream: &cudarc::driver::CudaStream,
    iters: u64,
    mut f: impl FnMut(),
) -> std::time::Duration {
    stream.synchronize().unwrap();
    let start = std::time::Instant::now();
    for _ in 0..iters {
        f();
    }
    stream.synchronize().unwrap();
    start.elapsed()
}

/// A fresh directory under the system's temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("gradmask-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
