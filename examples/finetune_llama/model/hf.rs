//! Hugging Face model directories: `config.json`, `*.safetensors`, `tokenizer.json`. Loading checks
//! every tensor against the config and names the file in each error; saving writes the same layout
//! (checkpoints are loadable model directories).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};

use crate::model::tokenizer::Tok;
use crate::model::{param_specs, Llama, LlamaConfig};

/// Reads and checks `config.json`; also returns its end-of-sequence id, if any.
pub fn read_config(path: &Path) -> Result<(LlamaConfig, Option<u32>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("missing or unreadable model file {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let cfg: LlamaConfig = serde_json::from_value(value.clone())
        .with_context(|| format!("{}: not a Llama config", path.display()))?;
    cfg.validate().with_context(|| path.display().to_string())?;
    let eos = match value.get("eos_token_id") {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|n| n as u32),
        Some(serde_json::Value::Array(ids)) => {
            ids.first().and_then(|n| n.as_u64()).map(|n| n as u32)
        }
        _ => None,
    };
    Ok((cfg, eos))
}

/// Loads a model directory onto `device`.
pub fn load_dir(dir: &Path, device: &Device) -> Result<(Llama, Tok)> {
    if !dir.is_dir() {
        bail!("model directory {} does not exist", dir.display());
    }
    let (cfg, eos) = read_config(&dir.join("config.json"))?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("missing model file: no *.safetensors in {}", dir.display());
    }
    let mut found: HashMap<String, (Tensor, PathBuf)> = HashMap::new();
    for file in &files {
        let tensors = candle_core::safetensors::load(file, &Device::Cpu).with_context(|| {
            format!("{}: corrupt or unreadable safetensors file", file.display())
        })?;
        for (name, tensor) in tensors {
            found.insert(name, (tensor, file.clone()));
        }
    }
    let tensors = take_tensors(&cfg, found, &dir.join("config.json"))?;
    let model = Llama::from_tensors(cfg, tensors, device)?;
    let tok = Tok::from_file(&dir.join("tokenizer.json"), eos)?;
    check_vocab(&model.cfg, &tok, &dir.join("tokenizer.json"))?;
    Ok((model, tok))
}

/// Picks the tensors of `cfg` out of `found` (name -> tensor, file), in storage order, checking
/// names and shapes.
fn take_tensors(
    cfg: &LlamaConfig,
    mut found: HashMap<String, (Tensor, PathBuf)>,
    config: &Path,
) -> Result<Vec<Tensor>> {
    let mut tensors = Vec::new();
    for (name, shape, _, _) in param_specs(cfg) {
        let Some((tensor, file)) = found.remove(&name) else {
            bail!(
                "config/weights mismatch: tensor `{name}` is not in the weights, but {} asks for it \
                 ({} layers, tie_word_embeddings = {})",
                config.display(),
                cfg.num_hidden_layers,
                cfg.tie_word_embeddings
            );
        };
        if tensor.dims() != shape.as_slice() {
            bail!(
                "config/weights mismatch: `{name}` has shape {:?} in {}, but {} implies {shape:?}",
                tensor.dims(),
                file.display(),
                config.display()
            );
        }
        tensors.push(tensor);
    }
    let extra: Vec<&String> = found.keys().filter(|k| k.contains("layers.")).collect();
    if let Some(name) = extra.first() {
        bail!(
            "config/weights mismatch: the weights have `{name}`, which {} does not describe",
            config.display()
        );
    }
    Ok(tensors)
}

pub fn check_vocab(cfg: &LlamaConfig, tok: &Tok, tokenizer: &Path) -> Result<()> {
    if tok.vocab_size() > cfg.vocab_size {
        bail!(
            "config/weights mismatch: {} has {} tokens, the model's vocab_size is {}",
            tokenizer.display(),
            tok.vocab_size(),
            cfg.vocab_size
        );
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, then a rename.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = path.with_extension("tmp");
    write(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Saves a model directory from host buffers in storage order: `config.json`, `model.safetensors`
/// and `tokenizer.json`, each written atomically.
pub fn save_dir(dir: &Path, cfg: &LlamaConfig, params: &[Vec<f32>], tok: &Tok) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tensors = HashMap::new();
    for ((name, shape, _, _), data) in param_specs(cfg).into_iter().zip(params) {
        tensors.insert(name, Tensor::from_slice(data, shape, &Device::Cpu)?);
    }
    write_atomic(&dir.join("model.safetensors"), |tmp| {
        Ok(candle_core::safetensors::save(&tensors, tmp)?)
    })?;
    let mut config = serde_json::to_value(cfg)?;
    config["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
    config["eos_token_id"] = serde_json::json!(tok.eos());
    write_atomic(&dir.join("config.json"), |tmp| {
        Ok(std::fs::write(tmp, serde_json::to_string_pretty(&config)?)?)
    })?;
    write_atomic(&dir.join("tokenizer.json"), |tmp| {
        tok.tokenizer
            .save(tmp, false)
            .map_err(|e| anyhow::anyhow!("{e}"))
    })?;
    Ok(())
}
