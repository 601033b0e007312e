//! Checkpoints: `<method>/checkpoints/step-NNNNNN/` holds the weights as a loadable model directory
//! (`config.json`, `model.safetensors`, `tokenizer.json` when there is one), `optimizer.bin` (the
//! crate optimizer's own state file; with `--shards N`, one file per rank, `optimizer.bin.rank<r>`)
//! and `trainer.json`.
//!
//! Atomicity: a checkpoint is written into `step-NNNNNN.tmp/` and renamed into place, then the
//! `latest` pointer file is replaced atomically. A crash at any point leaves `latest` naming a
//! complete checkpoint. Older checkpoints are removed after the pointer moves.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use gradmask::candle::GmtAdamW;
use serde::{Deserialize, Serialize};

use crate::model::hf::{save_dir, write_atomic};
use crate::model::tokenizer::Tok;
use crate::model::Llama;
use crate::model::{host_params, set_params};

/// Where the trainer stood when the checkpoint was written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: u64,
    /// Steps the run was configured for (the schedule depends on it).
    pub total_steps: u64,
    /// The optimizer's own step counter (behind `step` by the skipped steps).
    pub optimizer_step: u64,
    /// Ranks the optimizer's state was sharded over (`--shards`; absent before it existed: 1).
    #[serde(default = "one")]
    pub shards: usize,
}

fn one() -> usize {
    1
}

fn root(dir: &Path) -> PathBuf {
    dir.join("checkpoints")
}

/// Writes a checkpoint after `step` steps.
pub fn save(
    dir: &Path,
    model: &Llama,
    tok: &Tok,
    optimizer: &mut GmtAdamW,
    step: u64,
    total_steps: u64,
) -> Result<()> {
    let root = root(dir);
    let name = format!("step-{step:06}");
    let (tmp, done) = (root.join(format!("{name}.tmp")), root.join(&name));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    save_dir(&tmp, &model.cfg, &host_params(model)?, tok)?;
    let path = tmp.join("optimizer.bin");
    optimizer
        .save(&path)
        .with_context(|| format!("saving optimizer state to {}", path.display()))?;
    let state = TrainerState {
        step,
        total_steps,
        optimizer_step: optimizer.step_count()?,
        shards: optimizer.shards(),
    };
    std::fs::write(
        tmp.join("trainer.json"),
        serde_json::to_string_pretty(&state)?,
    )?;
    if done.exists() {
        std::fs::remove_dir_all(&done)?;
    }
    std::fs::rename(&tmp, &done)
        .with_context(|| format!("renaming {} into place", tmp.display()))?;
    write_atomic(&root.join("latest"), |path| {
        Ok(std::fs::write(path, &name)?)
    })?;
    for entry in std::fs::read_dir(&root)?.flatten() {
        let file = entry.file_name().to_string_lossy().to_string();
        if file.starts_with("step-") && file != name {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

/// Loads the latest checkpoint of `dir`, if any, into `optimizer` and the model.
pub fn load_latest(
    dir: &Path,
    model: &Llama,
    optimizer: &mut GmtAdamW,
) -> Result<Option<TrainerState>> {
    let pointer = root(dir).join("latest");
    if !pointer.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&pointer)
        .with_context(|| format!("reading {}", pointer.display()))?;
    let ckpt = root(dir).join(name.trim());
    let state_path = ckpt.join("trainer.json");
    let state: TrainerState = serde_json::from_str(
        &std::fs::read_to_string(&state_path)
            .with_context(|| format!("missing checkpoint file {}", state_path.display()))?,
    )
    .with_context(|| format!("{}: corrupt trainer state", state_path.display()))?;
    if state.shards != optimizer.shards() {
        bail!(
            "{}: the checkpoint was written with --shards {}, this run asks for --shards {}; \
             resume with --shards {}",
            ckpt.display(),
            state.shards,
            optimizer.shards(),
            state.shards
        );
    }
    let weights = ckpt.join("model.safetensors");
    let tensors = candle_core::safetensors::load(&weights, &Device::Cpu).with_context(|| {
        format!(
            "{}: missing or corrupt checkpoint weights",
            weights.display()
        )
    })?;
    let mut host = Vec::with_capacity(model.params.len());
    for param in &model.params {
        let Some(tensor) = tensors.get(&param.name) else {
            bail!(
                "config/weights mismatch: {} has no tensor `{}`",
                weights.display(),
                param.name
            );
        };
        if tensor.dims() != param.var.dims() {
            bail!(
                "config/weights mismatch: `{}` has shape {:?} in {}, the model has {:?}",
                param.name,
                tensor.dims(),
                weights.display(),
                param.var.dims()
            );
        }
        host.push(tensor.flatten_all()?.to_vec1::<f32>()?);
    }
    let path = ckpt.join("optimizer.bin");
    optimizer
        .load(&path)
        .with_context(|| format!("loading optimizer state from {}", path.display()))?;
    let optimizer_step = optimizer.step_count()?;
    if optimizer_step != state.optimizer_step {
        bail!(
            "{}: optimizer.bin is at step {optimizer_step}, trainer.json says {}",
            ckpt.display(),
            state.optimizer_step
        );
    }
    set_params(model, &host)?;
    Ok(Some(state))
}
