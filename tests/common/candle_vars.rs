//! Shared by the candle adapter's CPU tests: the vars' names and sizes, and seeded values.

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

/// Names (Llama-style, so the default rule finds layers) and lengths: sizes 0, 1, 3, odd, and one
/// larger than a work-list chunk.
pub const VARS: [(&str, usize); 5] = [
    ("model.embed_tokens.weight", 70_001),
    ("model.layers.0.mlp.up_proj.weight", 257),
    ("model.layers.0.input_layernorm.weight", 3),
    ("model.layers.1.self_attn.o_proj.bias", 1),
    ("model.layers.1.empty", 0),
];
/// Their group ids under `Scope::Groups` by `llama_layer`: no layer first, then layers 0 and 1.
pub const LAYER_IDS: [u32; 5] = [0, 1, 1, 2, 2];

/// `len` draws of N(0, scale^2) from `seed`.
pub fn normal(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let dist = Normal::new(0.0f32, scale).unwrap();
    (0..len).map(|_| dist.sample(&mut rng)).collect()
}
