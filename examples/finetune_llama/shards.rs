//! `--shards N`: the optimizer's state sharded ZeRO-style over N ranks, as threads on the CPU.
//!
//! The concatenation of the model's tensors is cut into N equal parts (`ShardLayout::flat`);
//! rank r keeps m, v (and the selection workspace) of its part only and updates only those
//! weights, through the crate's `GmtAdamW::sharded` with the in-process `ThreadCollective`. The
//! ranks all-reduce the selection's histograms, so each gets the exact threshold of the whole
//! tensors, and every weight ends bit for bit where an unsharded step puts it: the losses are the
//! unsharded run's. Forward and backward stay on the one model (the gradients are accumulated as
//! without `--shards`); each rank reads its slices of them, as a ZeRO-2 rank reads its
//! reduce-scattered part. Checkpoints: one file per rank (`<path>.rank<r>`).

use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};
use gradmask::{
    GmtAdamW, MaskStability, ShardLayout, Shards, StepReport, TensorTable, ThreadCollective,
};

use crate::optim::OptimSpec;

/// The N ranks' optimizers and their slices of each tensor (`ranges[rank][tensor]`).
pub struct ShardedHost {
    ranks: Vec<GmtAdamW>,
    ranges: Vec<Vec<Range<usize>>>,
    /// Every rank's mask stability, added (per tensor, kept entries and those kept before).
    stability: Option<MaskStability>,
}

impl ShardedHost {
    /// N ranks for `table` with `spec`; each rank is built on its own thread (construction
    /// checks, with one all-reduce, that all ranks agree).
    pub fn new(table: &TensorTable, spec: &OptimSpec, shards: usize) -> Result<Self> {
        let ranges: Vec<Vec<Range<usize>>> = (0..shards)
            .map(|r| {
                let layout = ShardLayout::flat(table, shards, r)?;
                Ok((0..table.len()).map(|t| layout.local_range(t)).collect())
            })
            .collect::<Result<_>>()?;
        let ranks = on_ranks(shards, |rank, collective| {
            let shards = Shards::new(ShardLayout::flat(table, shards, rank)?, collective)?;
            let mut opt = GmtAdamW::sharded(table.clone(), spec.adamw, spec.mask, shards)?
                .with_mask_mode(spec.mode);
            if let Some(frozen) = &spec.frozen {
                opt.set_frozen(frozen)?;
            }
            opt.track_stability(spec.track_stability);
            Ok(opt)
        })?;
        Ok(ShardedHost {
            ranks,
            ranges,
            stability: None,
        })
    }

    /// One step: every rank steps its slices of `params` with its slices of `grads`, on its own
    /// thread. The ranks' reports are equal (checked); rank 0's is returned.
    pub fn step(
        &mut self,
        params: &mut [Vec<f32>],
        grads: &[Vec<f32>],
        lr: f64,
    ) -> Result<StepReport> {
        let mut pieces: Vec<Vec<&mut [f32]>> = self.ranges.iter().map(|_| Vec::new()).collect();
        for (t, param) in params.iter_mut().enumerate() {
            let ranges: Vec<Range<usize>> = self.ranges.iter().map(|r| r[t].clone()).collect();
            for (rank, piece) in split_by_ranges(param, &ranges).into_iter().enumerate() {
                pieces[rank].push(piece);
            }
        }
        let ranges = &self.ranges;
        let reports: Vec<Result<StepReport>> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .ranks
                .iter_mut()
                .zip(pieces)
                .enumerate()
                .map(|(rank, (opt, mut mine))| {
                    s.spawn(move || {
                        let g: Vec<&[f32]> = grads
                            .iter()
                            .zip(&ranges[rank])
                            .map(|(g, r)| &g[r.clone()])
                            .collect();
                        Ok(opt.step(&mut mine, &g, lr)?)
                    })
                })
                .collect();
            handles.into_iter().map(join).collect()
        });
        let reports: Vec<StepReport> = reports.into_iter().collect::<Result<_>>()?;
        // Debug text, not `==`: a report may hold NaN thresholds (random mask).
        let first = format!("{:?}", reports[0]);
        if reports.iter().any(|r| format!("{r:?}") != first) {
            return Err(anyhow!("the ranks' step reports differ"));
        }
        self.stability = self.ranks[0].stability().map(|first| {
            let mut sum = first.clone();
            for opt in &self.ranks[1..] {
                let other = opt.stability().expect("every rank tracks");
                for (total, t) in sum.tensors.iter_mut().zip(&other.tensors) {
                    total.kept += t.kept;
                    total.kept_before += t.kept_before;
                }
            }
            sum
        });
        Ok(reports.into_iter().next().expect("at least one rank"))
    }

    /// The whole model's mask stability of the last step (the ranks' counts added).
    pub fn stability(&self) -> Option<&MaskStability> {
        self.stability.as_ref()
    }

    pub fn step_count(&self) -> u64 {
        self.ranks[0].step_count()
    }

    /// Each rank saves its own state, to `<path>.rank<r>`.
    pub fn save(&self, path: &Path) -> Result<()> {
        for (rank, opt) in self.ranks.iter().enumerate() {
            opt.save(&rank_path(path, rank))?;
        }
        Ok(())
    }

    /// Each rank loads its own state; a file of another rank or layout is rejected.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        for (rank, opt) in self.ranks.iter_mut().enumerate() {
            opt.load(&rank_path(path, rank))?;
        }
        Ok(())
    }
}

fn rank_path(path: &Path, rank: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".rank{rank}"));
    PathBuf::from(name)
}

fn join<T>(handle: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    handle
        .join()
        .unwrap_or_else(|_| Err(anyhow!("a rank's thread panicked")))
}

/// Runs `f(rank, collective)` for every rank, each on its own thread.
fn on_ranks<T: Send>(
    world: usize,
    f: impl Fn(usize, ThreadCollective) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = ThreadCollective::group(world)
            .into_iter()
            .enumerate()
            .map(|(rank, c)| s.spawn(move || f(rank, c)))
            .collect();
        handles.into_iter().map(join).collect()
    })
}

/// `data` cut into the disjoint pieces `ranges` (which cover it), returned in the order given.
fn split_by_ranges<'a>(data: &'a mut [f32], ranges: &[Range<usize>]) -> Vec<&'a mut [f32]> {
    let mut order: Vec<usize> = (0..ranges.len()).collect();
    order.sort_by_key(|&i| (ranges[i].start, ranges[i].end));
    let mut out: Vec<Option<&'a mut [f32]>> = ranges.iter().map(|_| None).collect();
    let (mut rest, mut at) = (data, 0);
    for i in order {
        if ranges[i].is_empty() {
            out[i] = Some(&mut []);
            continue;
        }
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(ranges[i].end - at);
        out[i] = Some(&mut head[ranges[i].start - at..]);
        (rest, at) = (tail, ranges[i].end);
    }
    out.into_iter()
        .map(|p| p.expect("one piece per rank"))
        .collect()
}
