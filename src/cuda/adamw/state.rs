//! The optimizer's state on the host: copies of m, v and the master weights in table order, and
//! checkpoints in the CPU engine's safetensors format (written and read by the CPU code, so a
//! checkpoint moves freely between the two engines). A sharded rank's copies and checkpoints hold
//! its slices, as the CPU engine's sharded ones do.

use std::path::Path;

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream};

use super::CudaGmtAdamW;
use crate::adamw::HostState;
use crate::cuda::module::cuda;
use crate::{GmtAdamW, Precision, Result, TensorTable};

/// Where each tensor's state lives in a device state buffer, and the stream its copies go to.
/// `table` holds this rank's slices (the whole tensors, unsharded).
struct Layout<'a> {
    stream: &'a Arc<CudaStream>,
    table: &'a TensorTable,
    state_offsets: &'a [u64],
}

impl Layout<'_> {
    /// (offset in table order, offset in the device buffer, length) of every non-empty tensor.
    fn ranges(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let lengths = self.table.lengths().iter().enumerate();
        lengths.filter(|(_, &len)| len > 0).map(|(t, &len)| {
            let at = self.table.offsets()[t] as usize;
            (at, self.state_offsets[t] as usize, len)
        })
    }

    /// Copies a device state buffer into a flat host vector in table order.
    fn download(&self, device: &CudaSlice<f32>) -> Result<Vec<f32>> {
        let mut host = vec![0.0f32; self.table.total_len() as usize];
        for (at, dev, len) in self.ranges() {
            let src = device.slice(dev..dev + len);
            self.stream
                .memcpy_dtoh(&src, &mut host[at..at + len])
                .map_err(cuda)?;
        }
        self.stream.synchronize().map_err(cuda)?;
        Ok(host)
    }

    /// Copies a flat host vector in table order into a device state buffer.
    fn upload(&self, host: &[f32], device: &mut CudaSlice<f32>) -> Result<()> {
        for (at, dev, len) in self.ranges() {
            let mut dst = device.slice_mut(dev..dev + len);
            self.stream
                .memcpy_htod(&host[at..at + len], &mut dst)
                .map_err(cuda)?;
        }
        self.stream.synchronize().map_err(cuda)
    }
}

impl CudaGmtAdamW {
    /// Names the tensors for checkpoints, as [`GmtAdamW::set_tensor_names`] does.
    pub fn set_tensor_names(&mut self, names: &[String]) -> Result<()> {
        self.names = crate::adamw::join_names(&self.table, names)?;
        Ok(())
    }

    fn layout(&self) -> Layout<'_> {
        Layout {
            stream: &self.stream,
            table: self.selector.local_table(),
            state_offsets: &self.state_offsets,
        }
    }

    /// The first and second moments, flat in table order, after the enqueued work has run.
    pub fn moments_to_host(&mut self) -> Result<(Vec<f32>, Vec<f32>)> {
        self.synchronize()?;
        let layout = self.layout();
        Ok((layout.download(&self.d_m)?, layout.download(&self.d_v)?))
    }

    /// The f32 master weights, flat in table order, once a bf16-master step has been taken.
    pub fn master_to_host(&mut self) -> Result<Option<Vec<f32>>> {
        self.synchronize()?;
        match (&self.d_master, self.precision) {
            (Some(master), Some(Precision::Bf16Master)) => {
                Ok(Some(self.layout().download(master)?))
            }
            _ => Ok(None),
        }
    }

    /// Writes the state to `path` in the CPU engine's checkpoint format ([`GmtAdamW::save`]:
    /// atomic, checksummed), after copying it to the host.
    pub fn save(&mut self, path: &Path) -> Result<()> {
        let (m, v) = self.moments_to_host()?;
        let master = self.master_to_host()?.unwrap_or_default();
        let state = HostState {
            step: self.counter.taken,
            precision: self.precision,
            mode: self.mode,
            m,
            v,
            master,
            names: self.names.clone(),
        };
        let shard = self.selector.shard_layout();
        GmtAdamW::save_state(
            self.table.clone(),
            self.adamw,
            self.mask,
            shard,
            state,
            path,
        )
    }

    /// Restores the state saved by [`CudaGmtAdamW::save`] or [`GmtAdamW::save`]. The file is read
    /// and checked on the host first; a checkpoint of another table, or a truncated or corrupt
    /// file, fails with [`Error::Checkpoint`](crate::Error::Checkpoint) and changes nothing.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let (table, names) = (self.table.clone(), &self.names);
        let shard = self.selector.shard_layout();
        let state = GmtAdamW::load_state(table, self.adamw, self.mask, shard, names, path)?;
        self.synchronize()?;
        if state.precision == Some(Precision::Bf16Master) && self.d_master.is_none() {
            let padded = *self.state_offsets.last().unwrap() as usize;
            self.d_master = Some(self.stream.alloc_zeros(padded.max(1)).map_err(cuda)?);
        }
        // A driver error past this point leaves the device state partly loaded (the counter and
        // precision unchanged); a rejected file never gets here.
        let layout = Layout {
            stream: &self.stream,
            table: self.selector.local_table(),
            state_offsets: &self.state_offsets,
        };
        layout.upload(&state.m, &mut self.d_m)?;
        layout.upload(&state.v, &mut self.d_v)?;
        if let (Some(master), Some(Precision::Bf16Master)) = (&mut self.d_master, state.precision) {
            layout.upload(&state.master, master)?;
        }
        self.counter.set(&self.stream, state.step)?;
        self.precision = state.precision;
        self.mode = state.mode;
        self.table_dirty = true;
        if let Some(tracker) = &mut self.stability {
            tracker.forget(); // a checkpoint holds no mask
        }
        Ok(())
    }
}
