//! `metrics.jsonl` (one JSON object per line, flushed as written), the per-layer kept fraction and
//! the per-layer mask stability.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use gradmask::{GroupStats, Scope};

use crate::model::Llama;
use crate::optim::{MaskMode, MaskStability, OptimSpec, StepReport};

pub struct Metrics {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
}

impl Metrics {
    /// Opens `path` for appending. Resuming after step `s` first drops the lines of later steps,
    /// so the file matches an uninterrupted run; a fresh run starts an empty file.
    pub fn open(path: &Path, resume_after: Option<u64>) -> Result<Self> {
        let kept: Vec<String> = match resume_after {
            Some(step) if path.exists() => std::fs::read_to_string(path)?
                .lines()
                .filter(|line| {
                    serde_json::from_str::<serde_json::Value>(line)
                        .ok()
                        .and_then(|v| v["step"].as_u64())
                        .is_some_and(|s| s <= step)
                })
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        let mut text = kept.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        let file = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok(Metrics {
            path: path.to_path_buf(),
            file: std::io::BufWriter::new(file),
        })
    }

    pub fn write(&mut self, value: serde_json::Value) -> Result<()> {
        writeln!(self.file, "{value}")
            .and_then(|_| self.file.flush())
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

/// Reads every JSON line of `path`.
pub fn read_lines(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not valid JSON", path.display(), i + 1))
        })
        .collect()
}

/// Fraction of each transformer layer's entries that took part in the update this step (masked
/// and frozen entries do not; on a skipped step, none). Where a tensor's kept count is its
/// group's fraction of its length (per-tensor groups, a random mask, or one group per layer with
/// nothing frozen) that is used; otherwise (GMT over the whole model, or layer groups with frozen tensors) `count_kept` counts
/// the tensor's entries at or above its group's threshold.
pub fn kept_by_layer(
    model: &Llama,
    report: &StepReport,
    spec: &OptimSpec,
    count_kept: impl Fn(usize, &GroupStats) -> Result<u64>,
) -> Result<Vec<f64>> {
    let layers = model.cfg.num_hidden_layers;
    let (mut kept, mut total) = (vec![0.0; layers], vec![0.0; layers]);
    let by_fraction = spec.mask.scope == Scope::PerTensor
        || spec.mode != MaskMode::Gmt
        || (spec.mask.scope == Scope::Groups && spec.frozen.is_none());
    for (i, param) in model.params.iter().enumerate() {
        let Some(layer) = param.layer else { continue };
        let len = param.var.elem_count() as f64;
        total[layer] += len;
        let frozen = spec.frozen.as_ref().is_some_and(|f| f[i]);
        if frozen || report.skipped || report.groups.is_empty() {
            continue;
        }
        let group = match spec.mask.scope {
            Scope::PerTensor => i,
            Scope::Global => 0,
            Scope::Groups => layer + 1,
        };
        let stats = &report.groups[group.min(report.groups.len() - 1)];
        kept[layer] += if spec.mask.mask_ratio == 0.0 {
            len
        } else if by_fraction {
            len * stats.kept as f64 / stats.len.max(1) as f64
        } else {
            count_kept(i, stats)? as f64
        };
    }
    Ok(kept
        .iter()
        .zip(&total)
        .map(|(k, t)| if *t > 0.0 { k / t } else { 0.0 })
        .collect())
}

/// Mask stability of a step: over the whole model and per transformer layer, the fraction of the
/// entries kept at this step that were also kept at the step before. `None` when not tracked, on a
/// skipped step, and at the first step (nothing to compare with); a layer with nothing kept gets
/// `None`.
pub fn stability_by_layer(
    model: &Llama,
    stability: Option<&MaskStability>,
    report: &StepReport,
) -> Option<(f64, Vec<Option<f64>>)> {
    let stability = stability.filter(|s| !report.skipped && s.step == report.step)?;
    let whole = stability.fraction(0..model.params.len())?;
    let layers = (0..model.cfg.num_hidden_layers)
        .map(|layer| {
            let mine = model.params.iter().enumerate();
            stability.fraction(mine.filter(|(_, p)| p.layer == Some(layer)).map(|(i, _)| i))
        })
        .collect();
    Some((whole, layers))
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use gradmask::{AdamWConfig, GmtAdamW, MaskConfig, MaskedUpdate};

    use super::*;
    use crate::cli::Size;
    use crate::{builtin_config, optim};

    /// Per layer, the group fraction (the shortcut for layer groups with nothing frozen) equals the
    /// count of entries at or above the threshold, and both equal the report's kept count.
    #[test]
    fn layer_fractions_equal_counted_entries() {
        let model = Llama::init(builtin_config(Size::Micro, 50), 3, &Device::Cpu).unwrap();
        let mask = MaskConfig {
            mask_ratio: 0.3,
            scope: Scope::Groups,
            masked: MaskedUpdate::ZeroGrad,
        };
        let mut opt =
            GmtAdamW::new(optim::table(&model).unwrap(), AdamWConfig::default(), mask).unwrap();
        let mut params: Vec<Vec<f32>> = model
            .params
            .iter()
            .map(|p| vec![0.0; p.var.elem_count()])
            .collect();
        // 1000 levels: ties at the threshold, so kept > target and a fraction of `target` fails.
        let grads: Vec<Vec<f32>> = params
            .iter()
            .enumerate()
            .map(|(t, p)| {
                (0..p.len())
                    .map(|i| ((i * 7919 + t * 104_729) % 1000) as f32 / 1000.0 - 0.5)
                    .collect()
            })
            .collect();
        let mut p: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
        let g: Vec<&[f32]> = grads.iter().map(|g| g.as_slice()).collect();
        let report = opt.step(&mut p, &g, 1e-3).unwrap();
        let count = |i: usize, stats: &GroupStats| {
            Ok(grads[i]
                .iter()
                .filter(|g| stats.keeps_key(g.to_bits() & 0x7fff_ffff))
                .count() as u64)
        };
        let spec = |frozen| OptimSpec {
            track_stability: false,
            shards: 1,
            adamw: AdamWConfig::default(),
            mask,
            mode: MaskMode::Gmt,
            frozen,
        };
        let shortcut = kept_by_layer(&model, &report, &spec(None), count).unwrap();
        // Frozen flags (none set) force the per-tensor count.
        let flags = Some(vec![false; model.params.len()]);
        let counted = kept_by_layer(&model, &report, &spec(flags), count).unwrap();
        assert_eq!(shortcut.len(), model.cfg.num_hidden_layers);
        for (layer, (a, b)) in shortcut.iter().zip(&counted).enumerate() {
            let stats = &report.groups[layer + 1];
            let want = stats.kept as f64 / stats.len as f64;
            assert!((a - b).abs() < 1e-12, "layer {layer}: {a} vs {b}");
            assert!((a - want).abs() < 1e-12, "layer {layer}: {a} vs {want}");
            assert!(
                *a > 0.69 && *a < 0.72,
                "layer {layer}: kept {a} at ratio 0.3"
            );
        }
    }
}
