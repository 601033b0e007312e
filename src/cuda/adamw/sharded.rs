//! `CudaGmtAdamW::sharded`: one rank of a model whose tensors are split across GPUs (ZeRO/FSDP).
//!
//! Each rank holds m, v (and master weights) of its slices only and steps only those, with its
//! slices of the gradients. The selection is the sharded [`CudaSelector`]'s: its histograms, sums
//! of g^2 and non-finite counts are all-reduced on the stream before every bucket choice, so every
//! rank gets the whole tensors' thresholds, kept counts, norm and skip decision. The random mask
//! and stochastic rounding draw by global index (each tensor's slice starts at its global
//! offset), so every entry gets the bits an unsharded step gives it. The random mask's kept counts
//! are all-reduced too (the report is the whole tensors'); mask stability, when tracked, counts
//! this rank's slices, as on the CPU (added over the ranks, the whole tensors'). Sharding adds no
//! host wait to a step.
//!
//! Every rank must take the same steps (precision, learning rate, reuse of the selection) in the
//! same order: the collectives pair up by order. Unlike the CPU engine, which
//! checks a header word of every step, this is not checked per step (it would cost a host sync);
//! construction checks the table, scope, layout and configurations once.

use std::sync::Arc;

use cudarc::driver::CudaStream;

use super::{launch, CudaGmtAdamW};
use crate::cuda::{CudaSelector, DeviceCollective};
use crate::shard::{CommStats, ShardLayout};
use crate::{AdamWConfig, MaskConfig, Result, TensorTable};

impl CudaGmtAdamW {
    /// An optimizer for one rank of a sharded model, on `stream`: `layout` says which slice of
    /// each tensor this rank holds (the buffers every step takes have those lengths), and
    /// `collective` how the ranks all-reduce, on `stream`. Every rank builds one with the same
    /// table, configurations and layout; two all-reduces check it (the only host syncs), and a
    /// disagreement fails on every rank with [`Error::ShardMismatch`](crate::Error::ShardMismatch).
    /// A layout of another table, or of another rank or world than the collective's, fails with
    /// [`Error::ShardLayout`](crate::Error::ShardLayout); a bad configuration with
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig), before touching the device.
    pub fn sharded(
        stream: Arc<CudaStream>,
        table: TensorTable,
        adamw: AdamWConfig,
        mask: MaskConfig,
        layout: ShardLayout,
        collective: Box<dyn DeviceCollective>,
    ) -> Result<Self> {
        adamw.validate()?;
        mask.validate()?;
        let mut selector =
            CudaSelector::sharded(stream.clone(), &table, mask.scope, layout, collective)?;
        let print = crate::adamw::config_print(&adamw, &mask, 0);
        selector.shard_agree(print, "the AdamW or mask configuration")?;
        launch::new(stream, selector, table, adamw, mask)
    }

    /// What the last step enqueued on the collective (zero unsharded): the selection's
    /// all-reduces, and the random mask's kept counts'.
    pub fn comm_stats(&self) -> CommStats {
        self.selector.comm_stats()
    }

    /// The shard layout of a sharded optimizer (`None` unsharded).
    pub fn shard_layout(&self) -> Option<&ShardLayout> {
        self.selector.shard_layout()
    }
}
