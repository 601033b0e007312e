//! `GmtAdamW` for one rank of a sharded model: its construction, and the step's exchange when no
//! selection runs (mask off, random mask). With a selection, the sharded `CpuSelector` does the
//! exchange with this optimizer's collective (see `cpu/sharded.rs`).
//!
//! Each rank keeps m, v and the master weights of its own slices, and updates only those; the
//! random mask and stochastic rounding draw by global index, so every entry gets the bits an
//! unsharded optimizer gives it. A step's first all-reduce carries a header that every rank
//! checks: dtype, ratio, call count, and a hash of (step, precision, learning rate, mask mode,
//! rounding seed), so ranks that drift apart stop with [`Error::ShardMismatch`] before anything
//! changes.
//!
//! [`Error::ShardMismatch`]: crate::Error::ShardMismatch

use super::config::{AdamWConfig, MaskMode};
use super::optimizer::{GmtAdamW, Precision};
use crate::rng::{draw, random_cut, splitmix, stream};
use crate::shard::exchange::{check_fingerprint, StatsExchange};
use crate::shard::{Collective, CommStats, ShardLayout, Shards, ThreadCollective};
use crate::{GradElem, GroupMap, MaskConfig, MaskedUpdate, Result, TensorTable};

/// A sharded optimizer's layout, collective and exchange buffer (sized once).
pub(crate) struct OptShards {
    pub layout: ShardLayout,
    pub collective: Box<dyn Collective>,
    /// The exchange of a step without selection: one extra word per group (random-mask kept).
    exchange: StatsExchange,
    dense_chunks: Vec<usize>,
    calls: u64,
    /// What the last step communicated.
    pub comm: CommStats,
}

/// Hashes the f64 bits of a configuration into a fingerprint.
fn hash_all(words: impl IntoIterator<Item = u64>) -> u64 {
    words.into_iter().fold(0, |h, w| splitmix(h ^ w))
}

/// The fingerprint all ranks of a sharded optimizer must agree on: the AdamW and mask
/// configurations, and `scope` (a fingerprint of the table, scope and layout).
pub(crate) fn config_print(adamw: &AdamWConfig, mask: &MaskConfig, scope: u64) -> u64 {
    let masked = match mask.masked {
        MaskedUpdate::ZeroGrad => 1,
        MaskedUpdate::Freeze => 2,
    };
    let config = [
        adamw.beta1,
        adamw.beta2,
        adamw.eps,
        adamw.weight_decay,
        adamw.grad_scale.unwrap_or(-1.0),
        adamw.max_grad_norm.unwrap_or(-1.0),
        mask.mask_ratio,
    ];
    hash_all(config.map(f64::to_bits).into_iter().chain([scope, masked]))
}

impl GmtAdamW {
    /// An optimizer for one rank of a sharded model: `shards` says which slice of each tensor this
    /// rank holds (its buffers have those lengths) and how the ranks all-reduce. Every rank builds
    /// one with the same table, configs and layout (checked by one all-reduce of a fingerprint:
    /// [`Error::ShardMismatch`](crate::Error::ShardMismatch)), then takes the same steps with its
    /// slices; each updates only its slices, to the bits an unsharded optimizer gives them.
    pub fn sharded(
        table: TensorTable,
        adamw: AdamWConfig,
        mask: MaskConfig,
        mut shards: Shards,
    ) -> Result<Self> {
        adamw.validate()?;
        mask.validate()?;
        shards.check_table(&table)?;
        let local = TensorTable::new(&shards.layout.local_lengths(), table.group_ids())?
            .with_dense(table.dense())?;
        let scope = crate::cpu::sharded_fingerprint(&table, mask.scope, &shards.layout);
        let print = config_print(&adamw, &mask, scope);
        let what = "the table, scope, shard layout, AdamW or mask configuration";
        check_fingerprint(&mut *shards.collective, print, what)?;
        let map = GroupMap::new(&table, mask.scope);
        let exchange = StatsExchange::new(&table, &map, &shards.layout, 1);
        let sharded = Box::new(OptShards {
            layout: shards.layout,
            collective: shards.collective,
            exchange,
            dense_chunks: Vec::new(),
            calls: 0,
            comm: CommStats::default(),
        });
        let mut opt = GmtAdamW::build(table, local, adamw, mask, Some(sharded));
        let dense: Vec<usize> = (0..opt.chunks.len())
            .filter(|&c| opt.table.dense()[opt.chunks[c].tensor])
            .collect();
        if let Some(sh) = &mut opt.sharded {
            sh.dense_chunks = dense;
        }
        Ok(opt)
    }

    /// An optimizer that only holds one rank's state for a checkpoint's save or load (the CUDA
    /// engine writes and reads its files through the CPU code): `layout`'s slices and label, and
    /// a collective that is never called. Unsharded without a layout.
    pub(crate) fn state_holder(
        table: TensorTable,
        adamw: AdamWConfig,
        mask: MaskConfig,
        layout: Option<&ShardLayout>,
    ) -> Result<Self> {
        let Some(layout) = layout else {
            return GmtAdamW::new(table, adamw, mask);
        };
        layout.check_table(&table)?;
        let local = TensorTable::new(&layout.local_lengths(), table.group_ids())?
            .with_dense(table.dense())?;
        let map = GroupMap::new(&table, mask.scope);
        let collective = ThreadCollective::group(1).into_iter().next();
        let collective = collective.ok_or(crate::Error::Collective("no group of one".into()))?;
        let sharded = Box::new(OptShards {
            exchange: StatsExchange::new(&table, &map, layout, 1),
            layout: layout.clone(),
            collective: Box::new(collective),
            dense_chunks: Vec::new(),
            calls: 0,
            comm: CommStats::default(),
        });
        Ok(GmtAdamW::build(table, local, adamw, mask, Some(sharded)))
    }

    /// What the last step communicated (zero unsharded).
    pub fn comm_stats(&self) -> CommStats {
        self.sharded
            .as_ref()
            .map_or(CommStats::default(), |s| s.comm)
    }

    /// The shard layout of a sharded optimizer.
    pub fn shard_layout(&self) -> Option<&ShardLayout> {
        self.sharded.as_ref().map(|s| &s.layout)
    }

    /// The header word of the step about to be taken (0 unsharded).
    pub(super) fn tag(&self, precision: Precision, lr: f64, seed: u64) -> u64 {
        if self.sharded.is_none() {
            return 0;
        }
        let (mode, mask_seed) = match self.mode {
            MaskMode::Gmt => (1, 0),
            MaskMode::Random { seed } => (2, seed),
        };
        let precision = hash_all(precision.name().bytes().map(u64::from));
        hash_all([
            self.step + 1,
            precision,
            lr.to_bits(),
            mode,
            mask_seed,
            seed,
        ])
    }

    /// The scan of a sharded step without selection: local sums, counts and (random mask) kept
    /// entries, one all-reduce, then the stats of the whole tensors. Returns the non-finite total.
    pub(super) fn scan_sharded<G: GradElem>(&mut self, grads: &[&[G]], tag: u64) -> Result<u64> {
        self.scan_chunks(grads);
        let random = match self.mode {
            MaskMode::Random { seed } if self.mask.mask_ratio > 0.0 => Some((
                stream(seed, self.step + 1),
                random_cut(self.mask.mask_ratio),
            )),
            _ => None,
        };
        let mut sh = self.sharded.take().expect("a sharded optimizer");
        let outcome = self.exchange_scan(&mut sh, grads, tag, random);
        self.sharded = Some(sh);
        outcome
    }

    fn exchange_scan<G: GradElem>(
        &mut self,
        sh: &mut OptShards,
        grads: &[&[G]],
        tag: u64,
        random: Option<(u64, u64)>,
    ) -> Result<u64> {
        sh.calls += 1;
        let ratio = self.mask.mask_ratio;
        sh.exchange.begin([
            crate::cpu::dtype_code(G::DTYPE),
            ratio.to_bits(),
            sh.calls,
            tag,
        ]);
        let (chunks, sums, counts) = (&self.chunks, &self.chunk_sum_sq, &self.chunk_non_finite);
        let lists = (
            &self.group_chunks[..],
            &self.group_chunk_off[..],
            &sh.dense_chunks[..],
        );
        let frozen = &self.frozen;
        sh.exchange.fill_records(
            lists,
            |c| (sums[c], counts[c]),
            |_, mine, extra| {
                if let Some((key, cut)) = random {
                    // The random mask's kept entries (the update counts the same draws).
                    extra[0] = mine
                        .iter()
                        .filter(|&&c| !frozen[chunks[c].tensor])
                        .map(|&c| {
                            let c = &chunks[c];
                            (c.global..c.global + c.len as u64)
                                .filter(|&i| u64::from(draw(key, i)) >= cut)
                                .count() as u64
                        })
                        .sum();
                }
            },
        );
        for chunk in &self.chunks {
            let data = &grads[chunk.tensor][chunk.start..][..chunk.len];
            let first = sh.layout.local_range(chunk.tensor).start + chunk.start;
            let whole = chunk.whole_start..chunk.whole_end;
            sh.exchange.put_chunk_cuts(chunk.tensor, first, data, whole);
        }
        sh.comm = CommStats::default();
        sh.comm.count(sh.exchange.words.len());
        sh.collective.all_reduce_u64(&mut sh.exchange.words)?;
        sh.exchange.finish(crate::cpu::HEADER_NAMES)?;

        // Every collective succeeded: the stats of the whole tensors.
        self.sum_sq = sh.exchange.total().to_f64();
        let non_finite = sh.exchange.total_non_finite();
        for g in 0..self.map.n_groups() {
            let stats = self.scanned_stats(g, &sh.exchange.sums[g], sh.exchange.non_finite(g));
            self.groups[g] = stats;
            if random.is_some() && non_finite == 0 {
                self.groups[g].kept = sh.exchange.extra(g)[0];
            }
        }
        Ok(non_finite)
    }
}
