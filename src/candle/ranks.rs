//! The CPU engine's optimizer: one [`crate::GmtAdamW`], or N sharded ranks as threads
//! ([`Config::with_shards`]).
//!
//! Sharded, the concatenation of the vars (stepping order) is cut into N equal parts
//! ([`ShardLayout::flat`], ZeRO style). Rank r is a [`crate::GmtAdamW::sharded`] holding m, v (and
//! master weights) of its part only; the ranks are joined by a [`ThreadCollective`]. A step lends
//! each rank its slices of every var's buffer and of every gradient, and runs every rank on its
//! own thread; the ranks all-reduce the selection's histograms, so each gets the exact threshold of
//! the whole tensors and updates its slices to the bits an unsharded step gives them. The ranks'
//! reports must agree (checked); rank 0's is the step's. Every rank gets the same checks on the
//! same lengths, flags and learning rate, so all reject a bad step before their first all-reduce
//! or none does; a rank that panicked mid-step would leave the others waiting in theirs (its
//! collective stays alive here), as a dead process leaves NCCL ranks waiting.
//!
//! Checkpoints: one file per rank, `<path>.rank<r>`, each recording its rank, the world size and
//! the layout, so a load with another number of ranks is rejected.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::access::Elem;
use super::config::Config;
use crate::{
    Error, GmtAdamW, MaskStability, Result, ShardLayout, Shards, StepReport, TensorTable,
    ThreadCollective,
};

pub(crate) struct HostRanks {
    ranks: Vec<GmtAdamW>,
    /// `ranges[rank][var]`: the rank's slice of the var (the whole var when unsharded).
    ranges: Vec<Vec<Range<usize>>>,
    /// What the ranks were built with, to build a fresh set for an all-or-nothing load.
    table: TensorTable,
    config: Config,
    names: Option<Vec<String>>,
    tracking: bool,
    /// The ranks' mask stability, added (kept entries and those kept before, per var).
    stability: Option<MaskStability>,
}

impl HostRanks {
    /// One optimizer for `table`, or `config.shards` ranks. Rejects 0 shards.
    pub(super) fn new(table: TensorTable, config: &Config) -> Result<Self> {
        let (ranks, ranges) = build(&table, config)?;
        Ok(HostRanks {
            ranks,
            ranges,
            table,
            config: config.clone(),
            names: None,
            tracking: false,
            stability: None,
        })
    }

    fn sharded(&self) -> bool {
        self.ranks.len() > 1
    }

    /// The whole model's table.
    pub(super) fn table(&self) -> &TensorTable {
        &self.table
    }

    pub(super) fn set_tensor_names(&mut self, names: &[String]) -> Result<()> {
        for opt in &mut self.ranks {
            opt.set_tensor_names(names)?;
        }
        self.names = Some(names.to_vec());
        Ok(())
    }

    pub(super) fn set_frozen(&mut self, frozen: &[bool]) -> Result<()> {
        self.ranks
            .iter_mut()
            .try_for_each(|opt| opt.set_frozen(frozen))
    }

    pub(super) fn track_stability(&mut self, on: bool) {
        self.ranks
            .iter_mut()
            .for_each(|opt| opt.track_stability(on));
        self.tracking = on;
    }

    /// The mask stability of the last step, the ranks' counts added.
    pub(super) fn stability(&mut self) -> Option<&MaskStability> {
        let mut sum = self.ranks[0].stability().cloned();
        for opt in &self.ranks[1..] {
            if let (Some(sum), Some(other)) = (&mut sum, opt.stability()) {
                for (total, t) in sum.tensors.iter_mut().zip(&other.tensors) {
                    total.kept += t.kept;
                    total.kept_before += t.kept_before;
                }
            }
        }
        self.stability = sum;
        self.stability.as_ref()
    }

    pub(super) fn step_count(&self) -> u64 {
        self.ranks[0].step_count()
    }

    /// The master weights of bf16 vars, flat in stepping order (the ranks' slices gathered).
    pub(super) fn master(&self) -> Option<Vec<f32>> {
        self.ranks[0].master()?;
        Some(self.gather(|opt| opt.master().unwrap_or_default()))
    }

    /// m and v, flat in stepping order (the ranks' slices gathered).
    pub(super) fn moments(&self) -> (Vec<f32>, Vec<f32>) {
        (
            self.gather(|opt| opt.moments().0),
            self.gather(|opt| opt.moments().1),
        )
    }

    /// The whole model's flat buffer from each rank's flat buffer of its slices.
    fn gather(&self, part: impl Fn(&GmtAdamW) -> &[f32]) -> Vec<f32> {
        let offsets = self.table.offsets();
        let mut out = vec![0.0; self.table.total_len() as usize];
        for (opt, mine) in self.ranks.iter().zip(&self.ranges) {
            let mut local = part(opt);
            for (range, &at) in mine.iter().zip(offsets) {
                let (here, rest) = local.split_at(range.len());
                out[at as usize + range.start..][..range.len()].copy_from_slice(here);
                local = rest;
            }
        }
        out
    }

    /// Each rank's state to its file: `path` unsharded, `<path>.rank<r>` sharded.
    pub(super) fn save(&self, path: &Path) -> Result<()> {
        (self.ranks.iter().enumerate()).try_for_each(|(r, opt)| opt.save(&self.path(path, r)))
    }

    /// Each rank's state from its file, all or nothing: a sharded load fills a fresh set of ranks
    /// and keeps it only when every rank's file loaded (a file of another rank, world size or
    /// layout is rejected by the engine).
    pub(super) fn load(&mut self, path: &Path) -> Result<()> {
        if !self.sharded() {
            return self.ranks[0].load(path);
        }
        let (mut fresh, _) = build(&self.table, &self.config)?;
        for (r, opt) in fresh.iter_mut().enumerate() {
            if let Some(names) = &self.names {
                opt.set_tensor_names(names)?;
            }
            opt.track_stability(self.tracking);
            opt.load(&self.path(path, r))?;
        }
        self.ranks = fresh;
        Ok(())
    }

    fn path(&self, path: &Path, rank: usize) -> PathBuf {
        if !self.sharded() {
            return path.to_path_buf();
        }
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".rank{rank}"));
        PathBuf::from(name)
    }

    /// One step of `params` (each var's whole buffer) on `grads`: each rank steps its slices, on
    /// its own thread when sharded. Returns rank 0's report, once every rank's agrees with it.
    pub(super) fn step<T: Elem>(
        &mut self,
        params: Vec<&mut [T]>,
        grads: &[&[T]],
        lr: f64,
    ) -> Result<StepReport> {
        if !self.sharded() {
            let mut params = params;
            return T::host_step(&mut self.ranks[0], &mut params, grads, lr);
        }
        let mut pieces: Vec<Vec<&mut [T]>> = self.ranges.iter().map(|_| Vec::new()).collect();
        for (v, param) in params.into_iter().enumerate() {
            let cuts = self.ranges.iter().map(|mine| mine[v].clone());
            for (rank, piece) in split(param, cuts).into_iter().enumerate() {
                pieces[rank].push(piece);
            }
        }
        let ranges = &self.ranges;
        let reports: Vec<Result<StepReport>> = std::thread::scope(|s| {
            let handles: Vec<_> = (self.ranks.iter_mut().zip(pieces).zip(ranges))
                .map(|((opt, mut mine), cuts)| {
                    s.spawn(move || {
                        let g: Vec<&[T]> =
                            grads.iter().zip(cuts).map(|(g, r)| &g[r.clone()]).collect();
                        T::host_step(opt, &mut mine, &g, lr)
                    })
                })
                .collect();
            let joined = handles.into_iter().map(|h| h.join());
            joined
                .map(|r| r.unwrap_or_else(|_| Err(Error::Collective("a rank panicked".into()))))
                .collect()
        });
        let reports: Vec<StepReport> = reports.into_iter().collect::<Result<_>>()?;
        // Debug text, not `==`: a report may hold NaN thresholds (random mask).
        let first = format!("{:?}", reports[0]);
        if reports[1..].iter().any(|r| format!("{r:?}") != first) {
            let what = "their step reports (after the step: a bug, the vars changed)";
            return Err(Error::ShardMismatch { what });
        }
        let none = Error::Collective("no rank reported".into());
        reports.into_iter().next().ok_or(none)
    }
}

/// The optimizer(s) for `table` and the slice of every var each holds.
#[allow(clippy::type_complexity)]
fn build(table: &TensorTable, config: &Config) -> Result<(Vec<GmtAdamW>, Vec<Vec<Range<usize>>>)> {
    let world = config.shards;
    if world == 0 {
        return Err(Error::InvalidConfig {
            name: "shards",
            value: 0.0,
            expected: "at least 1 rank (1: unsharded)",
        });
    }
    if world == 1 {
        let opt = GmtAdamW::new(table.clone(), config.adamw, config.mask)?;
        let whole = table.lengths().iter().map(|&n| 0..n).collect();
        return Ok((vec![opt.with_mask_mode(config.mode)], vec![whole]));
    }
    let layouts: Vec<ShardLayout> = (0..world)
        .map(|r| ShardLayout::flat(table, world, r))
        .collect::<Result<_>>()?;
    let ranges = (layouts.iter())
        .map(|l| (0..table.len()).map(|t| l.local_range(t)).collect())
        .collect();
    // Construction all-reduces a fingerprint: every rank on its own thread.
    let ranks = std::thread::scope(|s| {
        let handles: Vec<_> = (layouts.into_iter().zip(ThreadCollective::group(world)))
            .map(|(layout, collective)| {
                s.spawn(move || {
                    let shards = Shards::new(layout, collective)?;
                    let opt = GmtAdamW::sharded(table.clone(), config.adamw, config.mask, shards)?;
                    Ok(opt.with_mask_mode(config.mode))
                })
            })
            .collect();
        let joined = handles.into_iter().map(|h| h.join());
        joined
            .map(|r| r.unwrap_or_else(|_| Err(Error::Collective("a rank panicked".into()))))
            .collect::<Result<Vec<_>>>()
    })?;
    Ok((ranks, ranges))
}

/// `data` cut into the pieces `cuts` (disjoint and covering it, as a [`ShardLayout`]'s are), in
/// the order given.
fn split<T>(data: &mut [T], cuts: impl Iterator<Item = Range<usize>>) -> Vec<&mut [T]> {
    let cuts: Vec<Range<usize>> = cuts.collect();
    let mut order: Vec<usize> = (0..cuts.len()).collect();
    order.sort_by_key(|&i| (cuts[i].start, cuts[i].end));
    let mut out: Vec<Option<&mut [T]>> = cuts.iter().map(|_| None).collect();
    let (mut rest, mut at) = (data, 0);
    for i in order {
        if cuts[i].is_empty() {
            out[i] = Some(Default::default());
            continue;
        }
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(cuts[i].end - at);
        out[i] = Some(&mut head[cuts[i].start - at..]);
        (rest, at) = (tail, cuts[i].end);
    }
    out.into_iter().map(Option::unwrap_or_default).collect()
}
