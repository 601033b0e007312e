//! `metrics.jsonl` (one JSON object per line, flushed as written), the per-layer kept fraction and
//! the per-layer mask stability.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Tensor;
use gradmask::{GroupStats, MaskMode, MaskStability, Scope, StepReport};

use crate::model::Llama;
use crate::train::methods::OptimSpec;

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

/// How many entries of `grad` (a var's accumulated gradient) are at or above the threshold of
/// `stats`, its group. A var without a gradient was left out of the step: 0. Copies the gradient
/// to the host: only the per-layer plot under a whole-model scope, or layer groups with frozen
/// tensors, needs it.
pub fn count_kept(grad: &Option<Tensor>, stats: &GroupStats) -> Result<u64> {
    let Some(grad) = grad else {
        return Ok(0);
    };
    let values = grad.flatten_all()?.to_vec1::<f32>()?;
    Ok(values
        .iter()
        .filter(|g| stats.keeps_key(g.to_bits() & 0x7fff_ffff))
        .count() as u64)
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
    use candle_core::backprop::GradStore;
    use candle_core::Device;
    use candle_nn::Optimizer as _;
    use gradmask::{AdamWConfig, MaskConfig, MaskedUpdate};

    use super::*;
    use crate::builtin_config;
    use crate::cli::Size;
    use crate::train::methods::optimizer;

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
        let spec = |frozen| OptimSpec {
            track_stability: false,
            adamw: AdamWConfig::default(),
            mask,
            mode: MaskMode::Gmt,
            frozen,
            shards: 1,
        };
        let mut opt = optimizer(&model, &spec(None)).unwrap();
        // 1000 levels: ties at the threshold, so kept > target and a fraction of `target` fails.
        let mut store = GradStore::default();
        let mut grads = Vec::new();
        for (t, p) in model.params.iter().enumerate() {
            let values: Vec<f32> = (0..p.var.elem_count())
                .map(|i| ((i * 7919 + t * 104_729) % 1000) as f32 / 1000.0 - 0.5)
                .collect();
            let grad = Tensor::from_vec(values, p.var.shape(), &Device::Cpu).unwrap();
            store.insert(p.var.as_tensor(), grad.clone());
            grads.push(Some(grad));
        }
        opt.step(&store).unwrap();
        let report = opt.last_report().unwrap();
        let count = |i: usize, stats: &GroupStats| count_kept(&grads[i], stats);
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
        // The adapter's default layer rule gives the model's layers: group = layer + 1, the
        // embeddings, final norm and head in group 0.
        for (p, name) in model.params.iter().zip(opt.names()) {
            assert_eq!(
                opt.group_of(name),
                Some(p.layer.map_or(0, |l| l + 1)),
                "{name}"
            );
        }
    }
}
