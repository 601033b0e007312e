//! The model's shape: `LlamaConfig` (Hugging Face `config.json` fields), the parameter list in
//! storage order with Hugging Face names, and each parameter's role.

use anyhow::{bail, Result};
use candle_core::Var;
use serde::{Deserialize, Serialize};

/// The Hugging Face `config.json` fields a Llama needs (unknown fields are ignored on load).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_model_type")]
    pub model_type: String,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_positions() -> usize {
    2048
}
fn default_model_type() -> String {
    "llama".into()
}

impl LlamaConfig {
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
    /// Rejects shapes the forward pass cannot run.
    pub fn validate(&self) -> Result<()> {
        let (d, h, kv) = (self.hidden_size, self.num_attention_heads, self.kv_heads());
        if d == 0
            || h == 0
            || kv == 0
            || !d.is_multiple_of(h)
            || !h.is_multiple_of(kv)
            || !self.head_dim().is_multiple_of(2)
        {
            bail!("bad shape: hidden_size {d}, heads {h}, kv heads {kv} (need d % heads == 0, heads % kv == 0, even head_dim)");
        }
        Ok(())
    }
}

/// What a parameter tensor is, for grouping (HFT categories, plots).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Embed,
    AttnNorm,
    Q,
    K,
    V,
    O,
    MlpNorm,
    Gate,
    Up,
    Down,
    FinalNorm,
    Head,
}

/// Roles of one transformer block, in storage order, with their Hugging Face names.
pub const BLOCK: [(Role, &str); 9] = [
    (Role::AttnNorm, "input_layernorm"),
    (Role::Q, "self_attn.q_proj"),
    (Role::K, "self_attn.k_proj"),
    (Role::V, "self_attn.v_proj"),
    (Role::O, "self_attn.o_proj"),
    (Role::MlpNorm, "post_attention_layernorm"),
    (Role::Gate, "mlp.gate_proj"),
    (Role::Up, "mlp.up_proj"),
    (Role::Down, "mlp.down_proj"),
];

/// One trainable tensor.
pub struct Param {
    /// Hugging Face name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    pub layer: Option<usize>,
    pub role: Role,
    pub var: Var,
}

/// Names, shapes, layers and roles of every parameter of `cfg`, in storage order.
pub fn param_specs(cfg: &LlamaConfig) -> Vec<(String, Vec<usize>, Option<usize>, Role)> {
    let (d, f, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (q, kv) = (
        cfg.num_attention_heads * cfg.head_dim(),
        cfg.kv_heads() * cfg.head_dim(),
    );
    let mut specs = vec![(
        "model.embed_tokens.weight".to_string(),
        vec![v, d],
        None,
        Role::Embed,
    )];
    for layer in 0..cfg.num_hidden_layers {
        for (role, name) in BLOCK {
            let shape = match role {
                Role::AttnNorm | Role::MlpNorm => vec![d],
                Role::Q => vec![q, d],
                Role::K | Role::V => vec![kv, d],
                Role::O => vec![d, q],
                Role::Gate | Role::Up => vec![f, d],
                _ => vec![d, f], // Down
            };
            specs.push((
                format!("model.layers.{layer}.{name}.weight"),
                shape,
                Some(layer),
                role,
            ));
        }
    }
    specs.push(("model.norm.weight".into(), vec![d], None, Role::FinalNorm));
    if !cfg.tie_word_embeddings {
        specs.push(("lm_head.weight".into(), vec![v, d], None, Role::Head));
    }
    specs
}
