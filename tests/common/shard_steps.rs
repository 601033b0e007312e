//! Shared by the sharded optimizer tests (`shard_adamw.rs`, `shard_adamw_state.rs`): a random
//! setup (table, configs, gradients of every step), its steps on one rank's slices, and the
//! report and state as bits.

use std::ops::Range;

use super::shards::slices;
use super::{draw_f32, Dist};
use gradmask::{
    AdamWConfig, GmtAdamW, MaskConfig, MaskMode, MaskedUpdate, Scope, ShardLayout, Shards,
    StepReport, TensorTable,
};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    F32,
    F32Bf16Grads,
    F32F16Grads,
    Master,
    Stochastic,
}

/// What one run looks like: the table, configs, mode and the gradients of every step.
pub struct Setup {
    pub table: TensorTable,
    pub adamw: AdamWConfig,
    pub mask: MaskConfig,
    pub mode: MaskMode,
    pub frozen: Vec<bool>,
    pub kind: Kind,
    pub params: Vec<Vec<f32>>,
    pub grads: Vec<Vec<Vec<f32>>>,
}

/// Every report field as bits.
pub fn report_bits(r: &StepReport) -> Vec<u64> {
    let mut out = vec![u64::from(r.skipped), r.step, r.grad_norm.to_bits()];
    for g in &r.groups {
        out.extend([
            g.len,
            g.target,
            g.kept,
            u64::from(g.threshold_key),
            g.sum_sq.to_bits(),
        ]);
        out.extend([u64::from(g.threshold.to_bits()), g.non_finite]);
    }
    out
}

/// Takes the steps `steps` of `setup` on parameters held as f32 (bf16 kinds round them), on this
/// rank's slices `mine`; returns the reports' bits.
pub fn run(
    opt: &mut GmtAdamW,
    s: &Setup,
    mine: &[Range<usize>],
    params: &mut [Vec<f32>],
    steps: Range<usize>,
) -> Vec<Vec<u64>> {
    let mut reports = Vec::new();
    for step in steps {
        let lr = 1e-3 * (1.0 + step as f64);
        let grads: Vec<Vec<f32>> = s.grads[step]
            .iter()
            .zip(mine)
            .map(|(g, r)| g[r.clone()].to_vec())
            .collect();
        let report = match s.kind {
            Kind::F32 | Kind::F32Bf16Grads | Kind::F32F16Grads => {
                let mut p: Vec<&mut [f32]> = params.iter_mut().map(|p| &mut p[..]).collect();
                if s.kind == Kind::F32 {
                    let g: Vec<&[f32]> = grads.iter().map(|g| &g[..]).collect();
                    opt.step(&mut p, &g, lr)
                } else if s.kind == Kind::F32Bf16Grads {
                    let g: Vec<Vec<bf16>> = grads.iter().map(|g| to_bf16(g)).collect();
                    opt.step(&mut p, &g.iter().map(|g| &g[..]).collect::<Vec<_>>(), lr)
                } else {
                    let g: Vec<Vec<f16>> = grads
                        .iter()
                        .map(|g| g.iter().map(|&x| f16::from_f32(x)).collect())
                        .collect();
                    opt.step(&mut p, &g.iter().map(|g| &g[..]).collect::<Vec<_>>(), lr)
                }
            }
            Kind::Master | Kind::Stochastic => {
                let mut p: Vec<Vec<bf16>> = params.iter().map(|p| to_bf16(p)).collect();
                let g: Vec<Vec<bf16>> = grads.iter().map(|g| to_bf16(g)).collect();
                let g: Vec<&[bf16]> = g.iter().map(|g| &g[..]).collect();
                let mut pm: Vec<&mut [bf16]> = p.iter_mut().map(|p| &mut p[..]).collect();
                let report = if s.kind == Kind::Master {
                    opt.step_bf16_master(&mut pm, &g, lr)
                } else {
                    opt.step_bf16_stochastic(&mut pm, &g, lr, 99)
                };
                for (dst, src) in params.iter_mut().zip(&p) {
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d = s.to_f32());
                }
                report
            }
        };
        reports.push(report_bits(&report.unwrap()));
    }
    reports
}

/// Copies of this rank's slices `mine` of every tensor.
pub fn owned(data: &[Vec<f32>], mine: &[Range<usize>]) -> Vec<Vec<f32>> {
    slices(data, mine).iter().map(|x| x.to_vec()).collect()
}

pub fn to_bf16(x: &[f32]) -> Vec<bf16> {
    x.iter().map(|&v| bf16::from_f32(v)).collect()
}

/// This rank's slice of each whole tensor, flat (the layout of the optimizer's state).
pub fn flat_slices(whole: &[f32], table: &TensorTable, mine: &[Range<usize>]) -> Vec<u32> {
    let mut out = Vec::new();
    for (t, r) in mine.iter().enumerate() {
        let at = table.offsets()[t] as usize;
        out.extend(whole[at + r.start..at + r.end].iter().map(|x| x.to_bits()));
    }
    out
}

pub fn sharded(s: &Setup, layout: ShardLayout, c: gradmask::ThreadCollective) -> GmtAdamW {
    let shards = Shards::new(layout, c).unwrap();
    let mut opt = GmtAdamW::sharded(s.table.clone(), s.adamw, s.mask, shards)
        .unwrap()
        .with_mask_mode(s.mode);
    opt.set_frozen(&s.frozen).unwrap();
    opt
}

pub fn setup(seed: u64, kind: Kind, mode: u8, steps: usize) -> Setup {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = rng.random_range(1..5);
    let sizes = [0usize, 1, 3, 511, 513, 1500];
    let lengths: Vec<usize> = (0..n)
        .map(|_| sizes[rng.random_range(0..sizes.len())])
        .collect();
    let groups: Vec<u32> = (0..n).map(|_| rng.random_range(0..n as u32)).collect();
    let dense: Vec<bool> = (0..n).map(|_| rng.random_range(0..6) == 0).collect();
    let table = TensorTable::new(&lengths, &groups)
        .unwrap()
        .with_dense(&dense)
        .unwrap();
    let ratio = [0.0, 0.3, 0.9, 1.0][rng.random_range(0..4)];
    let mode_ = if mode == 1 {
        MaskMode::Random { seed: 7 }
    } else {
        MaskMode::Gmt
    };
    let adamw = AdamWConfig {
        weight_decay: [0.0, 0.1][rng.random_range(0..2)],
        max_grad_norm: [None, Some(1e-3)][rng.random_range(0..2)],
        ..AdamWConfig::default()
    };
    let mask = MaskConfig {
        mask_ratio: ratio,
        scope: [Scope::PerTensor, Scope::Global, Scope::Groups][rng.random_range(0..3)],
        masked: [MaskedUpdate::ZeroGrad, MaskedUpdate::Freeze][rng.random_range(0..2)],
    };
    let dists = [Dist::LogNormal, Dist::Ties, Dist::Normal];
    let grads = (0..steps)
        .map(|step| {
            let mut g: Vec<Vec<f32>> = lengths
                .iter()
                .enumerate()
                .map(|(t, &len)| draw_f32(dists[step % 3], len, seed ^ (step * 16 + t) as u64))
                .collect();
            if step == 1 && lengths[0] > 0 {
                g[0][lengths[0] / 2] = f32::NAN; // a skipped step
            }
            g
        })
        .collect();
    let params = lengths
        .iter()
        .map(|&len| draw_f32(Dist::Normal, len, seed + 1))
        .collect();
    let frozen = (0..n).map(|_| rng.random_range(0..3) == 0).collect();
    Setup {
        table,
        adamw,
        mask,
        mode: mode_,
        frozen,
        kind,
        params,
        grads,
    }
}
