//! `Config`: what the candle optimizer is built with, and the default layer grouping.

use std::fmt;
use std::sync::Arc;

use crate::{AdamWConfig, MaskConfig, MaskMode};

/// A rule on var names.
pub type NameRule<T> = Arc<dyn Fn(&str) -> T + Send + Sync>;

/// Everything [`GmtAdamW`](super::GmtAdamW) is built with: the `Config` of its
/// [`candle_nn::Optimizer`] implementation. `Config::new(adamw, mask)` gives lr 1e-3 (candle's
/// AdamW default), GMT (not the random mask), [`llama_layer`] grouping, no dense or frozen var,
/// one rank (no sharding).
#[derive(Clone)]
pub struct Config {
    pub adamw: AdamWConfig,
    pub mask: MaskConfig,
    /// The learning rate of the next step (`Optimizer::set_learning_rate` changes it).
    pub lr: f64,
    /// GMT, or the random-mask baseline at the same ratio.
    pub mode: MaskMode,
    /// The layer of a var, from its name: its selection group under `Scope::Groups`. Vars with
    /// `None` share one group; group ids are the distinct values in order, `None` first.
    pub layer_of: NameRule<Option<u32>>,
    /// Dense vars: never masked, still updated, not counted in any group's length.
    pub dense: NameRule<bool>,
    /// Frozen vars (the freezing baselines, e.g. HFT): never updated; their gradients still count
    /// in the selection, the norm and the non-finite check.
    pub frozen: NameRule<bool>,
    /// Ranks the optimizer's state is sharded over, as threads on the CPU (see `ranks`); 1:
    /// unsharded. Every var's entries end bit for bit where one rank puts them.
    pub shards: usize,
}

impl Config {
    /// The defaults above with these AdamW and mask settings.
    pub fn new(adamw: AdamWConfig, mask: MaskConfig) -> Self {
        Config {
            adamw,
            mask,
            lr: 1e-3,
            mode: MaskMode::Gmt,
            layer_of: Arc::new(llama_layer),
            dense: Arc::new(|_| false),
            frozen: Arc::new(|_| false),
            shards: 1,
        }
    }

    pub fn with_lr(mut self, lr: f64) -> Self {
        self.lr = lr;
        self
    }

    pub fn with_mask_mode(mut self, mode: MaskMode) -> Self {
        self.mode = mode;
        self
    }

    /// Groups vars by `layer_of(name)` under `Scope::Groups`.
    pub fn with_layers(
        mut self,
        layer_of: impl Fn(&str) -> Option<u32> + Send + Sync + 'static,
    ) -> Self {
        self.layer_of = Arc::new(layer_of);
        self
    }

    pub fn with_dense(mut self, dense: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.dense = Arc::new(dense);
        self
    }

    /// Shards the optimizer's state over `shards` ranks, as threads on the CPU: ZeRO style, each
    /// rank keeps m and v of its slice of the vars (the concatenation in stepping order cut into
    /// equal parts) and steps it. CPU vars only; 0 is rejected when the optimizer is built.
    pub fn with_shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }

    pub fn with_frozen(mut self, frozen: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.frozen = Arc::new(frozen);
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new(AdamWConfig::default(), MaskConfig::default())
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("adamw", &self.adamw)
            .field("mask", &self.mask)
            .field("lr", &self.lr)
            .field("mode", &self.mode)
            .field("shards", &self.shards)
            .finish_non_exhaustive()
    }
}

/// The default layer rule: the first `.`-separated part of the name that is a number, so
/// `model.layers.3.self_attn.q_proj.weight` (Llama, Mistral, Qwen), `transformer.h.3.attn.c_attn`
/// (GPT-2) and `blocks.3.mlp.fc1` are layer 3. Names without one (`model.embed_tokens.weight`,
/// `model.norm.weight`, `lm_head.weight`) share one group.
pub fn llama_layer(name: &str) -> Option<u32> {
    name.split('.').find_map(|part| part.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_names_give_their_layer() {
        assert_eq!(
            llama_layer("model.layers.3.self_attn.q_proj.weight"),
            Some(3)
        );
        assert_eq!(llama_layer("model.layers.12.mlp.up_proj.weight"), Some(12));
        assert_eq!(llama_layer("transformer.h.0.attn.c_attn.weight"), Some(0));
        assert_eq!(llama_layer("model.embed_tokens.weight"), None);
        assert_eq!(llama_layer("lm_head.weight"), None);
        assert_eq!(llama_layer(""), None);
    }
}
