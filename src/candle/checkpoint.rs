//! Checkpoints of the candle optimizer: the engine's format ([`crate::GmtAdamW::save`]: atomic,
//! checksummed m, v, master weights, step counter, mask mode) with the vars' names recorded and
//! checked on load. The vars' values are the trainer's to save (`VarMap::save`).

use std::path::Path;

use super::optimizer::{Engine, GmtAdamW};
use crate::{Error, Result};

impl GmtAdamW {
    /// Writes the optimizer's state to `path` (safetensors, atomically; sharded, one file per rank:
    /// `<path>.rank<r>`). Needs named vars: a
    /// `VarMap::all_vars()` list has no names and a per-process order, so its checkpoint could not
    /// be matched to the vars again.
    pub fn save(&mut self, path: &Path) -> Result<()> {
        self.check_named()?;
        match &mut self.engine {
            Engine::Host(host) => host.opt.save(path),
            #[cfg(feature = "cuda")]
            Engine::Device(device) => device.opt.save(path),
        }
    }

    /// Restores the state written by [`GmtAdamW::save`] for the same vars (names, order and
    /// shapes; the engine and the device may differ, but a sharded state loads only into as many
    /// shards). A checkpoint of other vars fails with [`Error::Var`] naming the first var that
    /// differs, a corrupt one or one of another number of shards with [`Error::Checkpoint`];
    /// either changes nothing. The learning rate is not part of it.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        self.check_named()?;
        match &mut self.engine {
            Engine::Host(host) => host.opt.load(path),
            #[cfg(feature = "cuda")]
            Engine::Device(device) => device.opt.load(path),
        }
    }

    fn check_named(&self) -> Result<()> {
        if self.named || self.vars.is_empty() {
            return Ok(());
        }
        Err(Error::InvalidConfig {
            name: "checkpoint of unnamed vars",
            value: self.vars.len() as f64,
            expected: "named vars (build from &VarMap or (name, Var) pairs): VarMap::all_vars() \
                       has no names, and its order changes between processes",
        })
    }
}
