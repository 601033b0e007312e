//! The optimizer's state as flat host vectors, so that another engine (the CUDA optimizer) saves
//! and loads the CPU engine's checkpoint format without a second implementation of it.

use std::path::Path;

use super::config::{AdamWConfig, MaskMode};
use super::optimizer::{GmtAdamW, Precision};
use crate::{MaskConfig, Result, ShardLayout, TensorTable};

/// Everything a checkpoint holds, flat in table order (tensor `t` starts at `offsets()[t]`).
/// `master` is empty unless `precision` is `Bf16Master`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HostState {
    pub step: u64,
    pub precision: Option<Precision>,
    pub mode: MaskMode,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    pub master: Vec<f32>,
    /// The tensors' names joined by newlines (empty: unnamed), as `GmtAdamW` keeps them.
    pub names: String,
}

impl GmtAdamW {
    /// Writes `state` to `path` exactly as [`GmtAdamW::save`] would for an optimizer holding it
    /// (one rank of a sharded one with `layout`). The moment vectors must hold the table's total
    /// length, or the rank's slices' (the master too, with master weights).
    pub(crate) fn save_state(
        table: TensorTable,
        adamw: AdamWConfig,
        mask: MaskConfig,
        layout: Option<&ShardLayout>,
        state: HostState,
        path: &Path,
    ) -> Result<()> {
        let mut opt = GmtAdamW::state_holder(table, adamw, mask, layout)?;
        debug_assert_eq!(state.m.len(), opt.m.len());
        debug_assert_eq!(state.v.len(), opt.v.len());
        opt.step = state.step;
        opt.precision = state.precision;
        opt.m = state.m;
        opt.v = state.v;
        opt.master = state.master;
        opt.names = state.names;
        opt.set_mode(state.mode);
        opt.save(path)
    }

    /// Reads and checks a checkpoint as [`GmtAdamW::load`] does for an optimizer whose tensors
    /// have `names` (joined by newlines; empty: unnamed), one rank of a sharded one with
    /// `layout`, and returns its state.
    pub(crate) fn load_state(
        table: TensorTable,
        adamw: AdamWConfig,
        mask: MaskConfig,
        layout: Option<&ShardLayout>,
        names: &str,
        path: &Path,
    ) -> Result<HostState> {
        let mut opt = GmtAdamW::state_holder(table, adamw, mask, layout)?;
        opt.names = names.to_string();
        opt.load(path)?;
        let master = if opt.precision == Some(Precision::Bf16Master) {
            std::mem::take(&mut opt.master)
        } else {
            Vec::new()
        };
        Ok(HostState {
            step: opt.step,
            precision: opt.precision,
            mode: opt.mode,
            m: std::mem::take(&mut opt.m),
            v: std::mem::take(&mut opt.v),
            master,
            names: std::mem::take(&mut opt.names),
        })
    }
}
