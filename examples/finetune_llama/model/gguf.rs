//! GGUF models (llama.cpp's format), e.g. SmolLM2-135M-Instruct.Q4_1.gguf:
//! - the config comes from the `llama.*` metadata;
//! - every tensor is dequantized to f32 (Q4_0, Q4_1, Q8_0, K-quants, f16, ... via candle);
//! - llama.cpp's Q/K row permutation (its converter interleaves the two rotary halves of each
//!   head) is undone, so the weights fit our half-split RoPE like the Hugging Face originals;
//! - the gpt2 BPE tokenizer is rebuilt from `tokenizer.ggml.*` (tokens, merges, control tokens).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use candle_core::{Device, Tensor};
use tokenizers::pre_tokenizers::{byte_level::ByteLevel, digits::Digits, sequence::Sequence};

use crate::model::tokenizer::Tok;
use crate::model::{param_specs, Llama, LlamaConfig, Role};

/// The GGUF name of a Hugging Face parameter name.
pub fn gguf_name(hf: &str) -> String {
    let renames = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = renames.iter().find(|(h, _)| *h == hf) {
        return g.to_string();
    }
    let parts = [
        ("input_layernorm", "attn_norm"),
        ("self_attn.q_proj", "attn_q"),
        ("self_attn.k_proj", "attn_k"),
        ("self_attn.v_proj", "attn_v"),
        ("self_attn.o_proj", "attn_output"),
        ("post_attention_layernorm", "ffn_norm"),
        ("mlp.gate_proj", "ffn_gate"),
        ("mlp.up_proj", "ffn_up"),
        ("mlp.down_proj", "ffn_down"),
    ];
    let rest = hf.strip_prefix("model.layers.").unwrap_or(hf);
    let mut out = format!("blk.{rest}");
    for (h, g) in parts {
        out = out.replace(h, g);
    }
    out
}

/// llama.cpp's permutation of Q/K rows for `heads` heads: within each head, the rows of the two
/// rotary halves are interleaved. `inverse` undoes it.
pub fn permute_rows(w: &Tensor, heads: usize, inverse: bool) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let half = rows / heads / 2;
    let (a, b) = if inverse { (half, 2) } else { (2, half) };
    Ok(w.reshape((heads, a, b, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

fn meta<'a>(content: &'a Content, key: &str, path: &Path) -> Result<&'a Value> {
    content
        .metadata
        .get(key)
        .ok_or_else(|| anyhow!("{}: GGUF metadata key `{key}` is missing", path.display()))
}

fn meta_usize(content: &Content, key: &str, path: &Path) -> Result<usize> {
    let value = meta(content, key, path)?;
    Ok(value
        .to_u64()
        .or_else(|_| value.to_u32().map(u64::from))
        .map_err(|e| anyhow!("{}: `{key}`: {e}", path.display()))? as usize)
}

/// An f32 metadata value, widened through its shortest decimal form (1e-5f32 becomes 1e-5).
fn meta_f64(content: &Content, key: &str, default: f64) -> f64 {
    let value = content.metadata.get(key).and_then(|v| v.to_f32().ok());
    value.map_or(default, |x| x.to_string().parse().unwrap_or(f64::from(x)))
}

/// The model config described by a GGUF file's metadata.
pub fn config(content: &Content, path: &Path) -> Result<LlamaConfig> {
    let arch = meta(content, "general.architecture", path)?
        .to_string()
        .map_err(|e| anyhow!("{e}"))?;
    if arch != "llama" {
        bail!(
            "{}: architecture `{arch}` is not supported (only llama)",
            path.display()
        );
    }
    let embd = content
        .tensor_infos
        .get("token_embd.weight")
        .ok_or_else(|| anyhow!("{}: tensor `token_embd.weight` is missing", path.display()))?;
    let heads = meta_usize(content, "llama.attention.head_count", path)?;
    Ok(LlamaConfig {
        vocab_size: embd.shape.dims()[0],
        hidden_size: meta_usize(content, "llama.embedding_length", path)?,
        intermediate_size: meta_usize(content, "llama.feed_forward_length", path)?,
        num_hidden_layers: meta_usize(content, "llama.block_count", path)?,
        num_attention_heads: heads,
        num_key_value_heads: Some(
            meta_usize(content, "llama.attention.head_count_kv", path).unwrap_or(heads),
        ),
        rms_norm_eps: meta_f64(content, "llama.attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta: meta_f64(content, "llama.rope.freq_base", 10_000.0),
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
        max_position_embeddings: meta_usize(content, "llama.context_length", path).unwrap_or(2048),
        model_type: "llama".into(),
    })
}

/// Loads a GGUF model: dequantized f32 weights on `device` and the rebuilt tokenizer.
pub fn load(path: &Path, device: &Device) -> Result<(Llama, Tok)> {
    let mut file = std::fs::File::open(path)
        .with_context(|| format!("missing model file {}", path.display()))?;
    let content = Content::read(&mut file)
        .with_context(|| format!("{}: not a valid GGUF file", path.display()))?;
    let cfg = config(&content, path)?;
    cfg.validate().with_context(|| path.display().to_string())?;
    let mut tensors = Vec::new();
    for (hf, shape, _, role) in param_specs(&cfg) {
        let name = gguf_name(&hf);
        if !content.tensor_infos.contains_key(&name) {
            bail!("config/weights mismatch: {} has no tensor `{name}` ({hf}) that its metadata implies", path.display());
        }
        let tensor = content
            .tensor(&mut file, &name, &Device::Cpu)
            .and_then(|q| q.dequantize(&Device::Cpu))
            .with_context(|| {
                format!(
                    "{}: tensor `{name}` is corrupt or truncated",
                    path.display()
                )
            })?;
        if tensor.dims() != shape.as_slice() {
            bail!("config/weights mismatch: `{name}` has shape {:?} in {}, the metadata implies {shape:?}", tensor.dims(), path.display());
        }
        let tensor = match role {
            Role::Q => permute_rows(&tensor, cfg.num_attention_heads, true)?,
            Role::K => permute_rows(&tensor, cfg.kv_heads(), true)?,
            _ => tensor,
        };
        tensors.push(tensor);
    }
    let tok = tokenizer(&content, path)?;
    let (tokens, merges) = vocab_counts(&content);
    println!(
        "{}: tokenizer rebuilt from GGUF metadata: {tokens} tokens, {merges} merges",
        path.display()
    );
    crate::model::hf::check_vocab(&cfg, &tok, path)?;
    Ok((Llama::from_tensors(cfg, tensors, device)?, tok))
}

/// Rebuilds the gpt2 BPE tokenizer from `tokenizer.ggml.*` (candle builds vocabulary, merges and
/// control tokens). The pre-tokenizer is set like the Hugging Face originals: byte-level without
/// an added prefix space, and for `smollm` each digit split on its own.
pub fn tokenizer(content: &Content, path: &Path) -> Result<Tok> {
    let mut tokenizer = tokenizers::Tokenizer::from_gguf(content).with_context(|| {
        format!(
            "{}: missing tokenizer (cannot rebuild it from the GGUF metadata)",
            path.display()
        )
    })?;
    let pre = content
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .cloned();
    if matches!(pre.as_deref(), None | Some("gpt2" | "smollm" | "default")) {
        let byte_level = ByteLevel::new(false, true, true);
        if pre.as_deref() == Some("smollm") {
            tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
                Digits::new(true).into(),
                byte_level.into(),
            ])));
        } else {
            tokenizer.with_pre_tokenizer(Some(byte_level));
        }
        tokenizer.with_post_processor(None::<ByteLevel>);
    }
    let eos = content
        .metadata
        .get("tokenizer.ggml.eos_token_id")
        .and_then(|v| v.to_u32().ok());
    Tok::from_hf(tokenizer, eos)
}

/// Counts for the load report: (tokens, merges).
pub fn vocab_counts(content: &Content) -> (usize, usize) {
    let len = |key: &str| {
        content
            .metadata
            .get(key)
            .and_then(|v| v.to_vec().ok())
            .map_or(0, Vec::len)
    };
    (len("tokenizer.ggml.tokens"), len("tokenizer.ggml.merges"))
}
