//! The f64 AdamW reference (PyTorch's AdamW formula evaluated in f64) and the helpers that the adamw
//! tests and the step bench share.
//!
//! Tolerance: an f32 result `got` matches the reference `want` when
//! `|got - want| <= rtol * scale + 1e-30`, where `scale` is the sum of the magnitudes of the terms
//! that make up the quantity (for m: `|b1 m| + |(1 - b1) g|`; for v: `v`; for p:
//! `|p (1 - lr wd)| + |update|`). Each f32 operation rounds by at most 2^-24 of its result, and the
//! update is a handful of operations, so `rtol = 1e-6` bounds f32 with room for a few ulps; the
//! `scale` keeps cancellation (m near 0 while g flips sign) from turning rounding into a
//! "relative" failure.

use gradmask::{AdamWConfig, GradElem, MaskedUpdate};

/// The reference's new state for one entry, and the scales its tolerance uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefEntry {
    pub p: f64,
    pub m: f64,
    pub v: f64,
    pub p_scale: f64,
    pub m_scale: f64,
    pub v_scale: f64,
}

/// One AdamW step on one entry in f64. `g` is the gradient after scaling and clipping; `keep`
/// false applies `masked` (ZeroGrad: g = 0; Freeze: nothing changes).
#[allow(clippy::too_many_arguments)]
pub fn adamw_ref(
    p: f64,
    m: f64,
    v: f64,
    g: f64,
    keep: bool,
    masked: MaskedUpdate,
    config: &AdamWConfig,
    step: u64,
    lr: f64,
) -> RefEntry {
    if !keep && masked == MaskedUpdate::Freeze {
        let (p_scale, m_scale, v_scale) = (p.abs(), m.abs(), v.abs());
        return RefEntry {
            p,
            m,
            v,
            p_scale,
            m_scale,
            v_scale,
        };
    }
    let g = if keep { g } else { 0.0 };
    let (b1, b2) = (config.beta1, config.beta2);
    let t = step as f64;
    let (bias1, bias2) = (1.0 - b1.powf(t), 1.0 - b2.powf(t));
    let m_new = b1 * m + (1.0 - b1) * g;
    let v_new = b2 * v + (1.0 - b2) * g * g;
    let decayed = p - lr * config.weight_decay * p;
    let update = lr * (m_new / bias1) / ((v_new / bias2).sqrt() + config.eps);
    RefEntry {
        p: decayed - update,
        m: m_new,
        v: v_new,
        p_scale: decayed.abs() + update.abs(),
        m_scale: (b1 * m).abs() + ((1.0 - b1) * g).abs(),
        v_scale: v_new,
    }
}

/// The gradient multiplier in f64: `clip / grad_scale`, with the norm of the unscaled gradient and
/// PyTorch's `clip = min(1, max_norm / (norm + 1e-6))`. Returns `(multiplier, norm)`.
pub fn grad_mul_ref<'a, G: GradElem>(
    config: &AdamWConfig,
    grads: impl IntoIterator<Item = &'a [G]>,
) -> (f64, f64) {
    let sum_sq: f64 = grads
        .into_iter()
        .flat_map(|g| g.iter())
        .map(|x| f64::from(x.to_f32()).powi(2))
        .sum();
    let scale = config.grad_scale.unwrap_or(1.0);
    let norm = sum_sq.sqrt() / scale;
    let clip = config
        .max_grad_norm
        .map_or(1.0, |max| (max / (norm + 1e-6)).min(1.0));
    (clip / scale, norm)
}

/// Whether `got` matches `want` within `rtol * scale` (see the module notes).
pub fn close(got: f64, want: f64, scale: f64, rtol: f64) -> bool {
    (got - want).abs() <= rtol * scale + 1e-30
}

/// Mutable views of a list of buffers, as the optimizer takes them.
pub fn views_mut<T>(buffers: &mut [Vec<T>]) -> Vec<&mut [T]> {
    buffers.iter_mut().map(|b| &mut b[..]).collect()
}

/// Shared views of a list of buffers.
pub fn views<T>(buffers: &[Vec<T>]) -> Vec<&[T]> {
    buffers.iter().map(|b| &b[..]).collect()
}

/// Bit patterns of f32 values, for bit-for-bit comparisons that treat NaN and -0 exactly.
pub fn bits(values: &[f32]) -> Vec<u32> {
    values.iter().map(|x| x.to_bits()).collect()
}

/// Seeded parameters, uniform in [-1, 1].
pub fn draw_params(lengths: &[usize], seed: u64) -> Vec<Vec<f32>> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    lengths
        .iter()
        .map(|&n| (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect())
        .collect()
}

/// [`draw_params`] in the parameter type `P` (bf16 rounds each to nearest).
pub fn draw_params_as<P: super::FromF32>(lengths: &[usize], seed: u64) -> Vec<Vec<P>> {
    draw_params(lengths, seed)
        .into_iter()
        .map(|p| p.into_iter().map(P::from_f32).collect())
        .collect()
}

/// Seeded gradients of step `step`: tensor `t` draws from `dists[t % dists.len()]`.
pub fn draw_grads<T: super::FromF32>(
    lengths: &[usize],
    dists: &[super::Dist],
    seed: u64,
    step: u64,
) -> Vec<Vec<T>> {
    lengths
        .iter()
        .enumerate()
        .map(|(t, &n)| {
            let seed = seed ^ (step << 32) ^ (t as u64).wrapping_mul(0x9E37_79B9);
            super::draw(dists[t % dists.len()], n, seed)
        })
        .collect()
}

/// The state before a step, widened to f64 (parameters) or as f32 (moments, flat).
#[derive(Debug, Clone)]
pub struct Before {
    pub p: Vec<Vec<f64>>,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

/// Tolerances of one comparison: `rtol` for every quantity (see the module notes), plus
/// `p_rel * |p|` for parameters stored in bf16 (2^-8 for round-to-nearest, 2^-7 for stochastic
/// rounding, which may go either way).
#[derive(Debug, Clone, Copy)]
pub struct Tol {
    pub rtol: f64,
    pub p_rel: f64,
}

/// Checks one step of every tensor against the reference. `keeps[t][i]` says whether entry i of
/// tensor t was kept; `after_p` are the new parameters widened to f64; moments are flat.
#[allow(clippy::too_many_arguments)]
pub fn check_step<G: GradElem>(
    offsets: &[u64],
    config: &AdamWConfig,
    masked: MaskedUpdate,
    step: u64,
    lr: f64,
    before: &Before,
    grads: &[&[G]],
    keeps: &[Vec<bool>],
    after_p: &[Vec<f64>],
    after_m: &[f32],
    after_v: &[f32],
    tol: Tol,
) {
    let (grad_mul, _) = grad_mul_ref(config, grads.iter().copied());
    for (t, grad) in grads.iter().enumerate() {
        for (i, g) in grad.iter().enumerate() {
            let at = offsets[t] as usize + i;
            let want = adamw_ref(
                before.p[t][i],
                f64::from(before.m[at]),
                f64::from(before.v[at]),
                f64::from(g.to_f32()) * grad_mul,
                keeps[t][i],
                masked,
                config,
                step,
                lr,
            );
            let (p, m, v) = (
                after_p[t][i],
                f64::from(after_m[at]),
                f64::from(after_v[at]),
            );
            let where_ = format!("step {step}, tensor {t}, entry {i} (keep {})", keeps[t][i]);
            assert!(
                close(m, want.m, want.m_scale, tol.rtol),
                "m {m} vs {want:?} at {where_}"
            );
            assert!(
                close(v, want.v, want.v_scale, tol.rtol),
                "v {v} vs {want:?} at {where_}"
            );
            let p_scale = want.p_scale + tol.p_rel / tol.rtol * want.p.abs();
            assert!(
                close(p, want.p, p_scale, tol.rtol),
                "p {p} vs {want:?} at {where_}"
            );
        }
    }
}

/// Which entries GMT kept: dense tensors entirely, others where `|g| >= ` their group's threshold.
pub fn gmt_keeps<G: GradElem>(
    table: &gradmask::TensorTable,
    scope: gradmask::Scope,
    report: &gradmask::StepReport,
    grads: &[&[G]],
) -> Vec<Vec<bool>> {
    let map = gradmask::GroupMap::new(table, scope);
    grads
        .iter()
        .enumerate()
        .map(|(t, g)| {
            let stats = &report.groups[map.group_of[t] as usize];
            g.iter()
                .map(|x| table.dense()[t] || stats.keeps_key(x.key()))
                .collect()
        })
        .collect()
}

/// Which entries the random mask keeps, by the documented recipe.
pub fn random_keeps(
    table: &gradmask::TensorTable,
    seed: u64,
    step: u64,
    ratio: f64,
) -> Vec<Vec<bool>> {
    use gradmask::rng::{mix, random_cut};
    let cut = random_cut(ratio);
    (0..table.len())
        .map(|t| {
            let base = table.offsets()[t];
            (0..table.lengths()[t] as u64)
                .map(|i| table.dense()[t] || u64::from(mix(seed, step, base + i)) >= cut)
                .collect()
        })
        .collect()
}

/// Every entry kept.
pub fn all_keeps(table: &gradmask::TensorTable) -> Vec<Vec<bool>> {
    table.lengths().iter().map(|&n| vec![true; n]).collect()
}

/// Parameters widened to f64.
pub fn widen<T: GradElem>(params: &[Vec<T>]) -> Vec<Vec<f64>> {
    params
        .iter()
        .map(|p| p.iter().map(|x| f64::from(x.to_f32())).collect())
        .collect()
}

/// Everything a step may change, as bits.
#[derive(PartialEq)]
pub struct State {
    pub params: Vec<u32>,
    pub m: Vec<u32>,
    pub v: Vec<u32>,
    pub master: Option<Vec<u32>>,
    pub step: u64,
}

impl std::fmt::Debug for State {
    // A summary: the buffers are far too long to print.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sum = |v: &[u32]| v.iter().fold(0u64, |a, &x| a.rotate_left(5) ^ u64::from(x));
        write!(
            f,
            "State {{ step {}, params #{:x}, m #{:x}, v #{:x}, master {:?} }}",
            self.step,
            sum(&self.params),
            sum(&self.m),
            sum(&self.v),
            self.master.as_deref().map(sum)
        )
    }
}

pub fn state<P: Copy + Into<f32>>(opt: &gradmask::GmtAdamW, params: &[Vec<P>]) -> State {
    State {
        params: params
            .iter()
            .flatten()
            .map(|&x| x.into().to_bits())
            .collect(),
        m: bits(opt.moments().0),
        v: bits(opt.moments().1),
        master: opt.master().map(bits),
        step: opt.step_count(),
    }
}

/// The config most tests use: weight decay, a grad scale, and clipping that is active.
pub fn clipped_config() -> gradmask::AdamWConfig {
    gradmask::AdamWConfig {
        weight_decay: 0.01,
        grad_scale: Some(8.0),
        max_grad_norm: Some(0.05),
        ..gradmask::AdamWConfig::default()
    }
}

/// The optimizer's state before a step, with the given parameters.
pub fn before(opt: &gradmask::GmtAdamW, p: Vec<Vec<f64>>) -> Before {
    let (m, v) = opt.moments();
    Before {
        p,
        m: m.to_vec(),
        v: v.to_vec(),
    }
}
