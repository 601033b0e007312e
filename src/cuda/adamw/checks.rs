//! What a step accepts: the checks that run before anything is enqueued (a rejected call changes
//! nothing), and the waits they may need (`plan.rs`).

use cudarc::driver::{DevicePtr, DevicePtrMut};

use super::CudaGmtAdamW;
use crate::{Error, Precision, Result};

impl CudaGmtAdamW {
    /// Resolves the steps before this one as far as it can without waiting, and waits only where
    /// this step cannot be planned or checked otherwise: the plan window is full, stability is
    /// tracked (it reads each step's counts), the precision differs from the unresolved steps'
    /// while the state's is still open, or `lr` is too large for the smallest step number the
    /// device may be at (the step size falls as t grows). Then rejects a bad lr or another
    /// precision than the state's, exactly as for the resolved step number.
    pub(super) fn settle(&mut self, precision: Precision, lr: f64) -> Result<()> {
        if self.stability.is_some() || self.counter.is_full() {
            self.resolve()?;
        } else {
            self.poll()?;
        }
        let open = self.precision.is_none();
        if open
            && self
                .counter
                .unresolved_precision()
                .is_some_and(|p| p != precision)
        {
            self.resolve()?;
        }
        let mut valid = self.adamw.validate_step(self.counter.taken + 1, lr);
        if valid.is_err() && self.counter.unresolved() > 0 {
            self.resolve()?;
            valid = self.adamw.validate_step(self.counter.taken + 1, lr);
        }
        valid?;
        self.check_precision(precision)
    }

    /// Rejects another precision than the state's.
    pub(super) fn check_precision(&self, precision: Precision) -> Result<()> {
        match self.precision.filter(|&p| p != precision) {
            Some(expected) => Err(Error::PrecisionMismatch {
                expected: expected.name(),
                got: precision.name(),
            }),
            None => Ok(()),
        }
    }

    /// Rejects buffers of the wrong count, length or device. Changes nothing.
    pub(super) fn check<G, T, P: DevicePtrMut<T>, S: DevicePtr<G>>(
        &self,
        params: &[P],
        grads: &[S],
    ) -> Result<()> {
        let local = self.selector.local_table();
        local.check_lengths("parameters", params.iter().map(|p| p.len()))?;
        local.check_lengths("gradients", grads.iter().map(|g| g.len()))?;
        let expected = self.stream.context().ordinal();
        let on_device = |tensor: usize, got: usize| {
            if got == expected {
                Ok(())
            } else {
                Err(Error::WrongDevice {
                    tensor,
                    expected,
                    got,
                })
            }
        };
        for (tensor, param) in params.iter().enumerate() {
            on_device(tensor, param.stream().context().ordinal())?;
        }
        for (tensor, grad) in grads.iter().enumerate() {
            on_device(tensor, grad.stream().context().ordinal())?;
        }
        Ok(())
    }
}
