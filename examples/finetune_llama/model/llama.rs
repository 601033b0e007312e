//! Our own Llama in candle, differentiable end to end: RMSNorm, RoPE (Hugging Face's half-split
//! layout), grouped-query attention, SwiGLU, tied or untied head.
//!
//! Every op here is a plain candle op with a backward rule (matmul, exp, sum, narrow, cat, gather,
//! silu, ...). candle-transformers' `llama` is not used: its fused RMSNorm, rope and softmax are
//! `apply_op*_no_bwd` and silently drop gradients.

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, Normal};

pub use super::config::{param_specs, LlamaConfig, Param, Role, BLOCK};

/// Per-layer key/value cache for incremental decoding.
#[derive(Default)]
pub struct KvCache {
    kv: Vec<Option<(Tensor, Tensor)>>,
}

pub struct Llama {
    pub cfg: LlamaConfig,
    pub params: Vec<Param>,
    pub device: Device,
    /// False inside [`Llama::no_grad`]: the weights enter the graph detached, so no backward graph
    /// is recorded (evaluation, generation).
    track: std::cell::Cell<bool>,
}

impl Llama {
    /// Builds a model from tensors in storage order (see [`param_specs`]); shapes must match.
    pub fn from_tensors(cfg: LlamaConfig, tensors: Vec<Tensor>, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let specs = param_specs(&cfg);
        if specs.len() != tensors.len() {
            bail!("expected {} tensors, got {}", specs.len(), tensors.len());
        }
        let mut params = Vec::with_capacity(specs.len());
        for ((name, shape, layer, role), tensor) in specs.into_iter().zip(tensors) {
            if tensor.dims() != shape.as_slice() {
                bail!(
                    "{name}: shape {:?} in the weights, {shape:?} from the config",
                    tensor.dims()
                );
            }
            let var = Var::from_tensor(&tensor.to_dtype(DType::F32)?.to_device(device)?)?;
            params.push(Param {
                name,
                layer,
                role,
                var,
            });
        }
        Ok(Llama {
            cfg,
            params,
            device: device.clone(),
            track: std::cell::Cell::new(true),
        })
    }

    /// A freshly initialised model: N(0, 0.02) matrices (output projections scaled by
    /// 1/sqrt(2 * layers)), unit norms, seeded.
    pub fn init(cfg: LlamaConfig, seed: u64, device: &Device) -> Result<Self> {
        let mut rng = StdRng::seed_from_u64(seed);
        let std_out = 0.02 / (2.0 * cfg.num_hidden_layers as f64).sqrt();
        let tensors = param_specs(&cfg)
            .into_iter()
            .map(|(_, shape, _, role)| {
                let n: usize = shape.iter().product();
                let data: Vec<f32> = match role {
                    Role::AttnNorm | Role::MlpNorm | Role::FinalNorm => vec![1.0; n],
                    _ => {
                        let std = if matches!(role, Role::O | Role::Down) {
                            std_out
                        } else {
                            0.02
                        };
                        let normal = Normal::new(0.0, std as f32).expect("valid std");
                        (0..n).map(|_| normal.sample(&mut rng)).collect()
                    }
                };
                Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Self::from_tensors(cfg, tensors, device)
    }

    /// Runs `f` with gradient tracking off.
    pub fn no_grad<R>(&self, f: impl FnOnce() -> R) -> R {
        let before = self.track.replace(false);
        let out = f();
        self.track.set(before);
        out
    }

    /// Parameter `index` as it enters the graph (tracked or detached).
    fn tensor(&self, index: usize) -> Tensor {
        let var = &self.params[index].var;
        if self.track.get() {
            var.as_tensor().clone()
        } else {
            var.as_detached_tensor()
        }
    }

    fn weight(&self, layer: usize, slot: usize) -> Tensor {
        self.tensor(1 + layer * BLOCK.len() + slot)
    }

    /// The hidden states after the final norm, `[b * t, hidden]`, for token ids `[b, t]` at
    /// positions `start_pos..start_pos + t`. `bias` is added to the attention scores (`[b or 1, 1,
    /// t, start_pos + t]`); `None` means plain causal. With `cache`, keys and values are appended.
    pub fn hidden(
        &self,
        ids: &Tensor,
        start_pos: usize,
        bias: Option<&Tensor>,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (b, t) = ids.dims2()?;
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let embed = self.tensor(0);
        let mut x = embed.index_select(&ids.flatten_all()?, 0)?; // [b*t, d]
        let (cos, sin) = rope_tables(hd, cfg.rope_theta, start_pos, t, &self.device)?;
        let causal;
        let bias = match bias {
            Some(bias) => bias,
            None => {
                causal = causal_bias(t, start_pos, &self.device)?;
                &causal
            }
        };
        if let Some(cache) = cache.as_deref_mut() {
            cache.kv.resize(cfg.num_hidden_layers, None);
        }
        for layer in 0..cfg.num_hidden_layers {
            let w = |slot| self.weight(layer, slot);
            let h = rms_norm(&x, &w(0), cfg.rms_norm_eps)?;
            let heads = |wt: &Tensor, n: usize| -> Result<Tensor> {
                Ok(linear(&h, wt)?
                    .reshape((b, t, n, hd))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let q = rope(&heads(&w(1), nh)?, &cos, &sin)?;
            let mut k = rope(&heads(&w(2), nkv)?, &cos, &sin)?;
            let mut v = heads(&w(3), nkv)?;
            if let Some(cache) = cache.as_deref_mut() {
                if let Some((k_old, v_old)) = &cache.kv[layer] {
                    k = Tensor::cat(&[k_old, &k], 2)?;
                    v = Tensor::cat(&[v_old, &v], 2)?;
                }
                cache.kv[layer] = Some((k.clone(), v.clone()));
            }
            let (k, v) = (repeat_kv(&k, nh / nkv)?, repeat_kv(&v, nh / nkv)?);
            let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?.broadcast_add(bias)?;
            let attn = softmax_last(&scores)?.matmul(&v)?; // [b, nh, t, hd]
            let attn = attn.transpose(1, 2)?.reshape((b * t, nh * hd))?;
            x = (x + linear(&attn, &w(4))?)?;
            let h = rms_norm(&x, &w(5), cfg.rms_norm_eps)?;
            let gated = (linear(&h, &w(6))?.silu()? * linear(&h, &w(7))?)?;
            x = (x + linear(&gated, &w(8))?)?;
        }
        let final_norm = self.tensor(1 + cfg.num_hidden_layers * BLOCK.len());
        rms_norm(&x, &final_norm, cfg.rms_norm_eps)
    }

    /// Logits `[n, vocab]` for hidden rows `[n, hidden]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let last = self.params.len() - 1;
        let head = if self.params[last].role == Role::Head {
            last
        } else {
            0
        };
        linear(hidden, &self.tensor(head))
    }
}

/// `x @ w^T` for `x: [n, in]`, `w: [out, in]`.
fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.matmul(&w.t()?)?)
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let inv_rms = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    Ok(x.broadcast_mul(&inv_rms)?.broadcast_mul(w)?)
}

/// Softmax over the last dim; the max is detached (softmax is shift-invariant, so the gradient is exact).
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// `cos`, `sin` of shape `[t, head_dim]` for positions `start..start + t`, HF layout (halves repeated).
fn rope_tables(
    hd: usize,
    theta: f64,
    start: usize,
    t: usize,
    dev: &Device,
) -> Result<(Tensor, Tensor)> {
    let half = hd / 2;
    let (mut cos, mut sin) = (Vec::with_capacity(t * hd), Vec::with_capacity(t * hd));
    for pos in start..start + t {
        let row: Vec<f64> = (0..half)
            .map(|i| pos as f64 * theta.powf(-((2 * i) as f64) / hd as f64))
            .collect();
        for _ in 0..2 {
            cos.extend(row.iter().map(|a| a.cos() as f32));
            sin.extend(row.iter().map(|a| a.sin() as f32));
        }
    }
    Ok((
        Tensor::from_vec(cos, (t, hd), dev)?,
        Tensor::from_vec(sin, (t, hd), dev)?,
    ))
}

/// `x * cos + rotate_half(x) * sin` on `[b, heads, t, hd]`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let (x1, x2) = (
        x.narrow(D::Minus1, 0, half)?,
        x.narrow(D::Minus1, half, half)?,
    );
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?)?)
}

/// `[b, kv, t, hd]` -> `[b, kv * n_rep, t, hd]`, each kv head repeated for its query heads.
fn repeat_kv(x: &Tensor, n_rep: usize) -> Result<Tensor> {
    if n_rep == 1 {
        return Ok(x.clone());
    }
    let (b, kv, t, hd) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .broadcast_as((b, kv, n_rep, t, hd))?
        .reshape((b, kv * n_rep, t, hd))?)
}

/// Additive causal bias `[1, 1, t, start + t]`: 0 where a query may attend, -inf elsewhere.
pub fn causal_bias(t: usize, start: usize, dev: &Device) -> Result<Tensor> {
    let total = start + t;
    let data: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j <= start + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(data, (1, 1, t, total), dev)?)
}

/// Current weights as host buffers, in parameter order.
pub fn host_params(model: &Llama) -> Result<Vec<Vec<f32>>> {
    model
        .params
        .iter()
        .map(|p| Ok(p.var.flatten_all()?.to_vec1::<f32>()?))
        .collect()
}

/// Writes host buffers into the model's variables.
pub fn set_params(model: &Llama, host: &[Vec<f32>]) -> Result<()> {
    for (param, data) in model.params.iter().zip(host) {
        param
            .var
            .set(&Tensor::from_slice(data, param.var.shape(), &model.device)?)?;
    }
    Ok(())
}
