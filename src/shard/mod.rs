//! Sharded exact thresholds: GMT when a model's gradients are split across ranks (ZeRO, FSDP).
//!
//! Each rank holds a slice of each tensor ([`ShardLayout`]). The radix select needs only
//! per-group histograms, so the ranks all-reduce those (a [`Collective`]) before every bucket
//! choice, and each gets the exact threshold of the whole tensors. The sums of g^2 are exact
//! integer sums of per-leaf f64 sums (`cpu::exact_sum`), so they too are bit for bit those of an
//! unsharded run, whatever the layout.
//!
//! - [`layout`]: [`ShardLayout`], validated once (every tensor covered exactly once).
//! - [`collective`]: the [`Collective`] trait (all-reduce sum of u64 and f64), the in-process
//!   [`ThreadCollective`] (ranks as threads), and [`CommStats`].
//! - `exchange`: the once-per-step exchange of call headers, sums, non-finite counts and the
//!   entries of the leaves that shard boundaries cut, and the fingerprint check at construction.
//!
//! [`crate::CpuSelector::sharded`] and [`crate::GmtAdamW::sharded`] take a [`Shards`].

pub mod collective;
pub(crate) mod exchange;
pub mod layout;

pub use collective::{Collective, CommStats, ThreadCollective};
pub use layout::ShardLayout;

use crate::{Error, Result, TensorTable};

/// This rank's part of a sharded model: the layout, and the collective that joins the ranks.
pub struct Shards {
    pub layout: ShardLayout,
    pub collective: Box<dyn Collective>,
}

impl Shards {
    /// Checks that the collective's rank and world are the layout's.
    pub fn new(layout: ShardLayout, collective: impl Collective + 'static) -> Result<Self> {
        if collective.rank() != layout.rank() || collective.world() != layout.world() {
            return Err(Error::ShardLayout(format!(
                "the layout is rank {} of {}, the collective rank {} of {}",
                layout.rank(),
                layout.world(),
                collective.rank(),
                collective.world()
            )));
        }
        Ok(Shards {
            layout,
            collective: Box::new(collective),
        })
    }

    /// Checks that the layout was built for `table`'s tensors.
    pub(crate) fn check_table(&self, table: &TensorTable) -> Result<()> {
        self.layout.check_table(table)
    }
}
