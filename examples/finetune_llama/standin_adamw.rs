//! TEMPORARY STAND-IN for the crate's `GmtAdamW` (branch `adamw`), with exactly its public API, so
//! the trainer can be built and tested before that branch lands. When it lands: delete this file,
//! drop `mod standin_adamw;` from main.rs, and change the one `use` line in optim.rs.
//!
//! Semantics follow DESIGN.md section 1 on host f32 slices: per-group exact threshold from the
//! crate's `CpuSelector`, skip on non-finite gradients, `ZeroGrad`/`Freeze`, PyTorch AdamW, random
//! mask keyed by (seed, step, global index). No attempt at speed.

use std::path::Path;

use gradmask::{
    CpuSelector, Error, GradElem, GroupStats, MaskConfig, MaskedUpdate, Result, TensorTable,
};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub grad_scale: Option<f64>,
    pub max_grad_norm: Option<f64>,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            grad_scale: None,
            max_grad_norm: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaskMode {
    #[default]
    Gmt,
    Random {
        seed: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    pub skipped: bool,
    pub step: u64,
    pub groups: Vec<GroupStats>,
    pub grad_norm: f64,
}

pub struct GmtAdamW {
    table: TensorTable,
    adamw: AdamWConfig,
    mask: MaskConfig,
    mode: MaskMode,
    selector: CpuSelector,
    frozen: Vec<bool>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    step: u64,
}

/// SplitMix64 of (seed, step, index): the random-mask draw.
fn draw(seed: u64, step: u64, index: u64) -> u32 {
    let fmix = |mut z: u64| {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
    let key = fmix(seed ^ fmix(step.wrapping_add(GOLDEN)) ^ GOLDEN);
    (fmix(key.wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN))) >> 32) as u32
}

impl GmtAdamW {
    pub fn new(table: TensorTable, adamw: AdamWConfig, mask: MaskConfig) -> Result<Self> {
        mask.validate()?;
        let selector = CpuSelector::new(&table, mask.scope);
        let zeros: Vec<Vec<f32>> = table.lengths().iter().map(|&n| vec![0.0; n]).collect();
        Ok(GmtAdamW {
            frozen: vec![false; table.len()],
            m: zeros.clone(),
            v: zeros,
            table,
            adamw,
            mask,
            mode: MaskMode::Gmt,
            selector,
            step: 0,
        })
    }

    pub fn with_mask_mode(mut self, mode: MaskMode) -> Self {
        self.mode = mode;
        self
    }

    pub fn set_frozen(&mut self, frozen: &[bool]) -> Result<()> {
        if frozen.len() != self.table.len() {
            return Err(Error::CountMismatch {
                what: "frozen flags",
                expected: self.table.len(),
                got: frozen.len(),
            });
        }
        self.frozen = frozen.to_vec();
        Ok(())
    }

    pub fn step_count(&self) -> u64 {
        self.step
    }

    pub fn step<G: GradElem>(
        &mut self,
        params: &mut [&mut [f32]],
        grads: &[&[G]],
        lr: f64,
    ) -> Result<StepReport> {
        self.table
            .check_lengths("params", params.iter().map(|p| p.len()))?;
        let ratio = if self.mode == MaskMode::Gmt {
            self.mask.mask_ratio
        } else {
            0.0
        };
        let selection = self.selector.select(grads, ratio)?.clone();
        let scale = self.adamw.grad_scale.unwrap_or(1.0);
        let grad_norm = selection.grad_norm() / scale;
        if selection.has_non_finite() {
            return Ok(StepReport {
                skipped: true,
                step: self.step,
                groups: selection.groups,
                grad_norm: f64::NAN,
            });
        }
        let clip = match self.adamw.max_grad_norm {
            Some(max) if grad_norm > max => max / (grad_norm + 1e-6),
            _ => 1.0,
        };
        let mut groups = selection.groups.clone();
        let cut = (self.mask.mask_ratio * 4_294_967_296.0).floor() as u64;
        if let MaskMode::Random { .. } = self.mode {
            for g in &mut groups {
                g.kept = 0;
                g.target = (g.len as f64 * (1.0 - self.mask.mask_ratio)).round() as u64;
                g.threshold = f32::NAN;
                g.threshold_key = 0;
            }
        }
        self.step += 1;
        let (b1, b2, t) = (self.adamw.beta1, self.adamw.beta2, self.step as i32);
        let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        let offsets = self.table.offsets().to_vec();
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            let group = selection.group_of[i] as usize;
            let stats = selection.groups[group];
            let dense = self.table.dense()[i];
            let (m, v) = (&mut self.m[i], &mut self.v[i]);
            for j in 0..p.len() {
                let keep = dense
                    || match self.mode {
                        MaskMode::Gmt => stats.keeps_key(g[j].key()),
                        MaskMode::Random { seed } => {
                            u64::from(draw(seed, self.step, offsets[i] + j as u64)) >= cut
                        }
                    };
                if let (MaskMode::Random { .. }, true, false) = (self.mode, keep, dense) {
                    groups[group].kept += 1;
                }
                if self.frozen[i] || (!keep && self.mask.masked == MaskedUpdate::Freeze) {
                    continue;
                }
                let grad = if keep {
                    g[j].to_f32() as f64 / scale * clip
                } else {
                    0.0
                };
                let mut x = p[j] as f64 * (1.0 - lr * self.adamw.weight_decay);
                let mj = b1 * m[j] as f64 + (1.0 - b1) * grad;
                let vj = b2 * v[j] as f64 + (1.0 - b2) * grad * grad;
                x -= lr * (mj / bc1) / ((vj / bc2).sqrt() + self.adamw.eps);
                (p[j], m[j], v[j]) = (x as f32, mj as f32, vj as f32);
            }
        }
        Ok(StepReport {
            skipped: false,
            step: self.step,
            groups,
            grad_norm,
        })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut bytes = self.step.to_le_bytes().to_vec();
        for buf in self.m.iter().chain(&self.v) {
            bytes.extend_from_slice(bytemuck::cast_slice(buf));
        }
        std::fs::write(path, bytes).map_err(|e| Error::Checkpoint {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    pub fn load(&mut self, path: &Path) -> Result<()> {
        let bad = |reason: String| Error::Checkpoint {
            path: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let want = 8 + 8 * self.table.total_len() as usize;
        if bytes.len() != want {
            return Err(bad(format!(
                "{} bytes, this table needs {want}",
                bytes.len()
            )));
        }
        self.step = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        let mut at = 8;
        for buf in self.m.iter_mut().chain(self.v.iter_mut()) {
            let n = buf.len() * 4;
            for (dst, src) in buf.iter_mut().zip(bytes[at..at + n].chunks_exact(4)) {
                *dst = f32::from_le_bytes(src.try_into().expect("4 bytes"));
            }
            at += n;
        }
        Ok(())
    }
}
