//! `CpuSelector::select` for one rank of a sharded model (see `shard/mod.rs`).
//!
//! The steps are the unsharded ones without speculation, with an all-reduce before each bucket
//! choice:
//! 1. Pass 1 over this rank's chunks: first-digit histograms, sums of g^2 of whole leaves,
//!    non-finite counts.
//! 2. One all-reduce: the call header, per group the exact sum, the non-finite count and the
//!    merged histogram, the dense tensors' sum and count, and the entries of cut leaves. Every rank
//!    then chooses the same first bucket of every group.
//! 3. Pass 2 (local): each rank compacts its keys in the bucket into its candidate buffer.
//! 4. Per refinement digit: each rank histograms its candidates (or re-reads its slices when they
//!    did not fit), one all-reduce of the histograms of every group still refining, and every rank
//!    descends the same way. There is no early exit on a bucket that holds exactly the remaining
//!    target (its minimum would need a min-reduce): the full descent ends on the same key.

use rayon::prelude::*;

use super::radix::{GroupState, Stage};
use super::select::CpuSelector;
use super::sharded_refine::descend_shared;
use crate::adamw::table_fingerprint;
use crate::config::{kept_target, validate_ratio};
use crate::rng::splitmix;
use crate::select::{without_selection, GroupStats, Selection};
use crate::shard::exchange::{check_fingerprint, StatsExchange};
use crate::shard::{Collective, CommStats, ShardLayout};
use crate::tuning::{FIRST_DIGIT_BINS, FIRST_DIGIT_BITS, REFINE_DIGIT_BITS};
use crate::{DType, Error, GradElem, GroupMap, Result, Scope, TensorTable};

/// A sharded selector's layout, collective (unless its owner lends one per call) and buffers.
pub(crate) struct Sharded {
    pub layout: ShardLayout,
    pub collective: Option<Box<dyn Collective>>,
    pub exchange: StatsExchange,
    /// One refinement digit's histograms of the groups still refining.
    pub(super) refine: Vec<u64>,
    pub(super) active: Vec<usize>,
    /// Calls so far (in the header: ranks must call in step).
    calls: u64,
    /// This rank's chunks of dense tensors.
    pub dense_chunks: Vec<usize>,
    /// What the last call communicated.
    pub comm: CommStats,
}

/// What each word of the call header is, for [`Error::ShardMismatch`].
pub(crate) const HEADER_NAMES: [&str; 4] = [
    "the gradient dtype",
    "the mask ratio",
    "the call count",
    "the step, precision, learning rate or mask mode",
];

/// The header code of a dtype.
pub(crate) fn dtype_code(dtype: DType) -> u64 {
    match dtype {
        DType::F32 => 1,
        DType::BF16 => 2,
        DType::F16 => 3,
    }
}

/// What every rank of a sharded selector must share: table, scope and layout.
pub(crate) fn fingerprint(table: &TensorTable, scope: Scope, layout: &ShardLayout) -> u64 {
    let scope = match scope {
        Scope::PerTensor => 1,
        Scope::Global => 2,
        Scope::Groups => 3,
    };
    splitmix(table_fingerprint(table) ^ splitmix(scope ^ layout.fingerprint()))
}

impl Sharded {
    /// Sizes the buffers. With `shards`' collective kept here, first checks with one all-reduce
    /// that every rank built the same selector; without (`lent`), the owner checks.
    pub fn new(
        table: &TensorTable,
        map: &GroupMap,
        scope: Scope,
        layout: ShardLayout,
        collective: Option<Box<dyn Collective>>,
    ) -> Result<Self> {
        let mut sharded = Sharded {
            exchange: StatsExchange::new(table, map, &layout, FIRST_DIGIT_BINS),
            refine: vec![0; map.n_groups() << REFINE_DIGIT_BITS],
            active: Vec::with_capacity(map.n_groups()),
            calls: 0,
            dense_chunks: Vec::new(),
            comm: CommStats::default(),
            layout,
            collective,
        };
        if let Some(collective) = &mut sharded.collective {
            let print = fingerprint(table, scope, &sharded.layout);
            check_fingerprint(&mut **collective, print, "the table, scope or shard layout")?;
        }
        Ok(sharded)
    }

    pub(super) fn all_reduce(
        &mut self,
        collective: &mut dyn Collective,
        which: Buffer,
    ) -> Result<()> {
        let words = match which {
            Buffer::Exchange => &mut self.exchange.words[..],
            Buffer::Refine(len) => &mut self.refine[..len],
        };
        self.comm.count(words.len());
        collective.all_reduce_u64(words)
    }
}

pub(super) enum Buffer {
    Exchange,
    Refine(usize),
}

impl CpuSelector {
    /// What the last call communicated (zero for an unsharded selector).
    pub fn comm_stats(&self) -> CommStats {
        self.sharded
            .as_ref()
            .map_or(CommStats::default(), |s| s.comm)
    }

    pub(super) fn select_sharded<T: GradElem>(
        &mut self,
        grads: &[&[T]],
        mask_ratio: f64,
    ) -> Result<&Selection> {
        let mut sharded = self.sharded.take().expect("a sharded selector");
        let mut collective = sharded
            .collective
            .take()
            .expect("a selector with its collective");
        let outcome = self.sharded_passes(&mut sharded, &mut *collective, grads, mask_ratio, 0);
        sharded.collective = Some(collective);
        self.sharded = Some(sharded);
        outcome?;
        Ok(&self.selection)
    }

    /// The sharded selection with a lent collective; `tag` joins the call header (the optimizer's
    /// step, precision and learning rate), which must be equal on every rank.
    pub(crate) fn select_with<T: GradElem>(
        &mut self,
        grads: &[&[T]],
        mask_ratio: f64,
        collective: &mut dyn Collective,
        tag: u64,
    ) -> Result<&Selection> {
        validate_ratio(mask_ratio)?;
        let mut sharded = self.sharded.take().expect("a sharded selector");
        let outcome = self.sharded_passes(&mut sharded, collective, grads, mask_ratio, tag);
        self.sharded = Some(sharded);
        outcome?;
        Ok(&self.selection)
    }

    fn sharded_passes<T: GradElem>(
        &mut self,
        sh: &mut Sharded,
        collective: &mut dyn Collective,
        grads: &[&[T]],
        mask_ratio: f64,
        tag: u64,
    ) -> Result<()> {
        let local = sh.layout.local_lengths();
        self.table.check_count("gradients", grads.len())?;
        for (tensor, (g, &expected)) in grads.iter().zip(&local).enumerate() {
            if g.len() != expected {
                return Err(Error::LengthMismatch {
                    tensor,
                    what: "gradients (this rank's slice)",
                    expected,
                    got: g.len(),
                });
            }
        }
        let shift = T::DTYPE.key_bits() - FIRST_DIGIT_BITS;
        sh.comm = CommStats::default();
        self.windows.fill(None);
        self.missed.fill(false);
        self.first_pass(grads, shift, false);
        self.fill_exchange(sh, grads, mask_ratio, tag);
        sh.all_reduce(collective, Buffer::Exchange)?;
        sh.exchange.finish(HEADER_NAMES)?;
        self.choose_shared_first_buckets(sh, mask_ratio, shift);
        self.assign_candidates();
        self.compact_candidates(grads);
        self.close_all_gaps();
        while self.refine_round(sh, collective, grads)? {}

        // Every collective succeeded: publish.
        self.selection.dtype = T::DTYPE;
        self.selection.sum_sq = sh.exchange.total().to_f64();
        self.selection.non_finite = sh.exchange.total_non_finite();
        let exchange = &sh.exchange;
        for (g, (state, stats)) in self
            .states
            .iter()
            .zip(&mut self.selection.groups)
            .enumerate()
        {
            debug_assert_eq!(state.stage, Stage::Done);
            let len = self.map.group_len[g];
            *stats = GroupStats {
                len,
                target: kept_target(len, mask_ratio),
                sum_sq: exchange.sums[g].to_f64(),
                non_finite: exchange.non_finite(g),
                threshold_key: state.threshold_key,
                kept: state.kept,
                ..GroupStats::default()
            };
        }
        self.selection.finish_thresholds();
        Ok(())
    }

    /// This rank's part of the pass-1 all-reduce.
    fn fill_exchange<T: GradElem>(
        &self,
        sh: &mut Sharded,
        grads: &[&[T]],
        mask_ratio: f64,
        tag: u64,
    ) {
        sh.calls += 1;
        let header = [dtype_code(T::DTYPE), mask_ratio.to_bits(), sh.calls, tag];
        sh.exchange.begin(header);
        let (counts, hists) = (&self.chunk_counts, &self.chunk_hist);
        let lists = (
            &self.group_chunks[..],
            &self.group_chunk_off[..],
            &sh.dense_chunks[..],
        );
        sh.exchange.fill_records(
            lists,
            |c| (counts[c].sum, counts[c].non_finite),
            |_, mine, hist| {
                for &c in mine {
                    let chunk_hist = &hists[c * FIRST_DIGIT_BINS..][..FIRST_DIGIT_BINS];
                    for (h, &count) in hist.iter_mut().zip(chunk_hist) {
                        *h += u64::from(count);
                    }
                }
            },
        );
        for chunk in &self.chunks {
            let data = &grads[chunk.tensor][chunk.start..][..chunk.len];
            let first = sh.layout.local_range(chunk.tensor).start + chunk.start;
            let whole = chunk.whole_start..chunk.whole_end;
            sh.exchange.put_chunk_cuts(chunk.tensor, first, data, whole);
        }
    }

    /// Per group, from the reduced exchange: target and the first bucket (the selection itself
    /// is written only once every collective has succeeded).
    fn choose_shared_first_buckets(&mut self, sh: &Sharded, mask_ratio: f64, shift: u32) {
        let exchange = &sh.exchange;
        let lens = &self.map.group_len;
        self.states
            .par_iter_mut()
            .enumerate()
            .for_each(|(g, state)| {
                let target = kept_target(lens[g], mask_ratio);
                *state = GroupState {
                    target,
                    shift: shift + FIRST_DIGIT_BITS,
                    ..GroupState::default()
                };
                match without_selection(lens[g], target, mask_ratio) {
                    Some((threshold_key, kept)) => state.finish(threshold_key, kept),
                    None => descend_shared(state, exchange.extra(g), shift),
                }
            });
    }
}
