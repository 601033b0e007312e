//! Each method as a set-up of the one optimizer, the crate's candle adapter
//! (`gradmask::candle::GmtAdamW`), plus the one-off drop.
//! - `sft`: mask ratio 0 (plain AdamW).
//! - `gmt`: mask ratio r, scope, masked-update policy.
//! - `random`: the same ratio, entries drawn at random.
//! - `hft` (Hui et al. 2024, category-level): in every layer, 2 of the 4 attention matrices and
//!   1 or 2 of the 3 MLP matrices (alternating by layer) are frozen, chosen with the seed. Norms,
//!   embeddings and the head stay trainable.
//! - `oneoff`: SFT, then in each tensor the fraction r of entries with the smallest |delta| is
//!   reset to the pretrained value. The exact per-tensor threshold comes from the crate's
//!   `CpuSelector`, run on the deltas.

use std::collections::HashSet;

use anyhow::Result;
use candle_core::Var;
use gradmask::candle::{Config, GmtAdamW};
use gradmask::{AdamWConfig, CpuSelector, MaskConfig, MaskMode, MaskedUpdate, Scope, TensorTable};
use rand::{rngs::StdRng, seq::SliceRandom, SeedableRng};

use crate::cli::{Args, MaskedArg, Method, ScopeArg};
use crate::model::{Llama, Role};

/// What the optimizer is built with for one method.
#[derive(Debug, Clone)]
pub struct OptimSpec {
    pub adamw: AdamWConfig,
    pub mask: MaskConfig,
    pub mode: MaskMode,
    /// HFT: tensors left out of every update, in parameter order.
    pub frozen: Option<Vec<bool>>,
    /// Track mask stability (the CPU engine only: on a CUDA device there is none to report).
    pub track_stability: bool,
    /// Ranks (threads on the CPU) the optimizer's state is sharded over (`--shards`); 1: none.
    pub shards: usize,
}

/// The method's optimizer over the model's vars, named and in parameter order. This is all a
/// candle trainer needs to adopt GMT: the layer groups of `--scope layer` come from the names
/// (`model.layers.3.*` is layer 3: the adapter's default rule; embeddings, final norm and head
/// share one group), HFT's frozen tensors are a rule on names, `--shards N` is one more setting
/// (the adapter runs the N ranks as threads, each stepping its slice of the vars).
pub fn optimizer(model: &Llama, spec: &OptimSpec) -> Result<GmtAdamW> {
    let vars: Vec<(String, Var)> = model
        .params
        .iter()
        .map(|p| (p.name.clone(), p.var.clone()))
        .collect();
    let frozen: HashSet<String> = match &spec.frozen {
        Some(flags) => vars
            .iter()
            .zip(flags)
            .filter(|(_, &f)| f)
            .map(|((name, _), _)| name.clone())
            .collect(),
        None => HashSet::new(),
    };
    let config = Config::new(spec.adamw, spec.mask)
        .with_mask_mode(spec.mode)
        .with_shards(spec.shards)
        .with_frozen(move |name| frozen.contains(name));
    let mut opt = GmtAdamW::with_config(vars, config)?;
    opt.track_stability(spec.track_stability)?;
    Ok(opt)
}

pub fn optim_spec(method: Method, args: &Args, model: &Llama) -> OptimSpec {
    let ratio = match method {
        Method::Gmt | Method::Random => args.mask_ratio,
        Method::Sft | Method::Hft | Method::Oneoff => 0.0,
    };
    OptimSpec {
        adamw: AdamWConfig {
            weight_decay: args.weight_decay,
            grad_scale: (args.accum > 1).then_some(args.accum as f64),
            max_grad_norm: (args.max_grad_norm > 0.0).then_some(args.max_grad_norm),
            ..AdamWConfig::default()
        },
        mask: MaskConfig {
            mask_ratio: ratio,
            scope: match args.scope {
                ScopeArg::PerTensor => Scope::PerTensor,
                ScopeArg::Layer => Scope::Groups,
                ScopeArg::Global => Scope::Global,
            },
            masked: match args.masked {
                MaskedArg::ZeroGrad => MaskedUpdate::ZeroGrad,
                MaskedArg::Freeze => MaskedUpdate::Freeze,
            },
        },
        mode: match method {
            Method::Random => MaskMode::Random {
                seed: args.seed ^ 0x5EED,
            },
            _ => MaskMode::Gmt,
        },
        frozen: (method == Method::Hft).then(|| hft_frozen(model, args.seed)),
        track_stability: ratio > 0.0 && !args.no_mask_stability,
        shards: args.shards as usize,
    }
}

/// HFT's frozen flags, in parameter order.
pub fn hft_frozen(model: &Llama, seed: u64) -> Vec<bool> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x4854);
    let mut frozen = vec![false; model.params.len()];
    for layer in 0..model.cfg.num_hidden_layers {
        let index = |roles: &[Role]| -> Vec<usize> {
            model
                .params
                .iter()
                .enumerate()
                .filter(|(_, p)| p.layer == Some(layer) && roles.contains(&p.role))
                .map(|(i, _)| i)
                .collect()
        };
        let mut attention = index(&[Role::Q, Role::K, Role::V, Role::O]);
        let mut mlp = index(&[Role::Gate, Role::Up, Role::Down]);
        attention.shuffle(&mut rng);
        mlp.shuffle(&mut rng);
        let mlp_frozen = if layer % 2 == 0 { 2 } else { 1 };
        for &i in attention.iter().take(2).chain(mlp.iter().take(mlp_frozen)) {
            frozen[i] = true;
        }
    }
    frozen
}

/// The one-off drop: resets the `ratio` fraction of smallest |delta| entries of each tensor to
/// `pretrained`. Returns the number of entries reset.
pub fn drop_small_delta(
    params: &mut [Vec<f32>],
    pretrained: &[Vec<f32>],
    ratio: f64,
) -> Result<u64> {
    let deltas: Vec<Vec<f32>> = params
        .iter()
        .zip(pretrained)
        .map(|(p, p0)| p.iter().zip(p0).map(|(a, b)| a - b).collect())
        .collect();
    let lengths: Vec<usize> = deltas.iter().map(Vec::len).collect();
    let mut selector = CpuSelector::new(&TensorTable::per_tensor(&lengths)?, Scope::PerTensor);
    let views: Vec<&[f32]> = deltas.iter().map(Vec::as_slice).collect();
    let selection = selector.select(&views, ratio)?;
    let mut reset = 0;
    for (i, (param, delta)) in params.iter_mut().zip(&deltas).enumerate() {
        let stats = selection.group_of_tensor(i);
        for ((p, p0), d) in param.iter_mut().zip(&pretrained[i]).zip(delta) {
            if !stats.keeps_key(d.to_bits() & 0x7fff_ffff) {
                *p = *p0;
                reset += 1;
            }
        }
    }
    Ok(reset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_off_drop_resets_the_smallest_deltas() {
        let pretrained = vec![vec![0.0f32; 4], vec![1.0; 2]];
        let mut params = vec![vec![0.1, -0.4, 0.2, 0.3], vec![1.5, 0.0]];
        let reset = drop_small_delta(&mut params, &pretrained, 0.5).unwrap();
        assert_eq!(reset, 3);
        assert_eq!(params, vec![vec![0.0, -0.4, 0.0, 0.3], vec![1.0, 0.0]]);
    }
}
