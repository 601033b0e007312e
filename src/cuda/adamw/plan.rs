//! The step counter on the device, and the step plans that let the host enqueue a step without
//! waiting for the skip flags of the steps before it.
//!
//! Whether a step is taken is decided on the device (an Inf or NaN gradient anywhere skips it, and
//! a skipped step does not count, as on the CPU). A step's number t fixes its bias corrections and
//! rng keys, so a host that had to know t would wait for the previous step's skip flag. Instead the
//! device counts the steps taken (`GmStepCount`), and the host, which knows the count as of the
//! last step it resolved (`taken`) and how many steps it has enqueued since (`unresolved`), sends
//! one candidate plan per count the device may hold: t = taken + 1 ..= taken + unresolved + 1,
//! each computed on the host exactly as the CPU engine computes step t's scalars (f64 `powf`,
//! which the device could not reproduce bit for bit). `gm_step_plan` (one thread, between the
//! selection and the update) picks the device's and counts the step if it is taken.
//!
//! After each step the count is copied to pinned memory. The next step looks at that copy without
//! waiting (an event query) and, once it has landed, resolves every step before it. The window is
//! capped at [`MAX_UNRESOLVED`] + 1 plans (96 B each, from pageable memory): a host that many steps
//! ahead of the device waits for the count. A plan window that misses the device's count (a bug)
//! writes nothing and fails the next resolution.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};

use crate::cuda::module::{cuda, Function};
use crate::cuda::pinned::Pinned;
use crate::cuda::types::{GmStep, GmStepCount, GmStepPlan};
use crate::{Error, Precision, Result};

/// Steps the host may enqueue ahead of the last one it resolved before it waits.
pub(crate) const MAX_UNRESOLVED: u64 = 32;

/// What a resolution learnt: the count before and after the steps it resolved.
pub(super) struct Resolved {
    pub before: u64,
    pub taken: u64,
    /// The precision of the resolved steps (they all have one).
    pub precision: Precision,
}

pub(super) struct StepCounter {
    /// Steps taken as of the last resolved step.
    pub taken: u64,
    /// The steps enqueued since (at least one), and their precision (they all have one).
    pending: Option<(u64, Precision)>,
    plans: Vec<GmStepPlan>,
    d_plans: CudaSlice<GmStepPlan>,
    /// The picked plan of the step being run (read by the update and the stability pass).
    d_current: CudaSlice<GmStepPlan>,
    d_count: CudaSlice<GmStepCount>,
    h_count: Pinned<GmStepCount>,
}

impl StepCounter {
    /// A count of 0 on the device.
    pub fn new(stream: &Arc<CudaStream>) -> Result<Self> {
        let window = MAX_UNRESOLVED as usize + 1;
        Ok(StepCounter {
            taken: 0,
            pending: None,
            plans: Vec::with_capacity(window),
            d_plans: stream.alloc_zeros(window).map_err(cuda)?,
            d_current: stream.alloc_zeros(1).map_err(cuda)?,
            d_count: stream.alloc_zeros(1).map_err(cuda)?,
            h_count: Pinned::new(stream, 1)?,
        })
    }

    /// Steps enqueued since the last resolution.
    pub fn unresolved(&self) -> u64 {
        self.pending.map_or(0, |(steps, _)| steps)
    }

    /// The precision of the unresolved steps (None when there are none).
    pub fn unresolved_precision(&self) -> Option<Precision> {
        self.pending.map(|(_, precision)| precision)
    }

    /// The picked plan of the step being run, for the update and stability kernels.
    pub fn current(&self) -> &CudaSlice<GmStepPlan> {
        &self.d_current
    }

    /// Resolves the unresolved steps if their count has landed; never waits.
    pub fn poll(&mut self) -> Result<Option<Resolved>> {
        if self.pending.is_none() {
            return Ok(None);
        }
        match self.h_count.try_read()? {
            Some(count) => {
                let count = count[0];
                self.apply(count)
            }
            None => Ok(None),
        }
    }

    /// Resolves the unresolved steps, waiting for the last one's count.
    pub fn wait(&mut self) -> Result<Option<Resolved>> {
        if self.pending.is_none() {
            return Ok(None);
        }
        let count = self.h_count.read()?[0];
        self.apply(count)
    }

    fn apply(&mut self, count: GmStepCount) -> Result<Option<Resolved>> {
        let Some((_, precision)) = self.pending else {
            return Ok(None);
        };
        if count.missed > 0 {
            return Err(Error::Cuda(format!(
                "the step plans missed the device's step count {} time(s) (a gradmask bug): \
                 those steps were not applied",
                count.missed
            )));
        }
        let resolved = Resolved {
            before: self.taken,
            taken: count.taken,
            precision,
        };
        self.taken = count.taken;
        self.pending = None;
        Ok(Some(resolved))
    }

    /// Whether the window is full: the next step must wait for the count first.
    pub fn is_full(&self) -> bool {
        self.unresolved() >= MAX_UNRESOLVED
    }

    /// Sets the count, on the host and on the device (a loaded checkpoint's step). The caller has
    /// resolved every step first.
    pub fn set(&mut self, stream: &Arc<CudaStream>, taken: u64) -> Result<()> {
        debug_assert!(self.pending.is_none());
        let count = [GmStepCount { taken, missed: 0 }];
        stream
            .memcpy_htod(&count, &mut self.d_count)
            .map_err(cuda)?;
        self.taken = taken;
        Ok(())
    }

    /// Uploads the plans for every count the device may hold (`plan(t, i)`: step t's plan, the
    /// i-th candidate, i = 0 for t = taken + 1), enqueues `kernel` (`gm_step_plan`) after the
    /// selection whose totals are `d_step`, and the copy of the count to the host.
    pub fn enqueue(
        &mut self,
        stream: &Arc<CudaStream>,
        kernel: &Function,
        d_step: &CudaSlice<GmStep>,
        precision: Precision,
        plan: impl Fn(u64, u64) -> GmStepPlan,
    ) -> Result<()> {
        debug_assert!(!self.is_full());
        stream.context().bind_to_thread().map_err(cuda)?;
        let n_plans = self.unresolved() + 1;
        self.plans.clear();
        self.plans
            .extend((0..n_plans).map(|i| plan(self.taken + 1 + i, i)));
        stream
            .memcpy_htod(&self.plans, &mut self.d_plans)
            .map_err(cuda)?;
        {
            let (mut d_step, _step_read) = d_step.device_ptr(stream);
            let (mut d_count, _count_written) = self.d_count.device_ptr_mut(stream);
            let (mut d_plans, _plans_read) = self.d_plans.device_ptr(stream);
            let (mut d_current, _current_written) = self.d_current.device_ptr_mut(stream);
            let (mut base, mut n) = (self.taken, n_plans as u32);
            let arg = |p: &mut u64| p as *mut u64 as *mut std::ffi::c_void;
            // SAFETY: the argument array matches gm_step_plan's parameter list in
            // kernels/adamw.cu; d_plans holds n_plans <= MAX_UNRESOLVED + 1 plans (its size), and
            // every buffer is owned here or by the selector and sized in their `new`.
            unsafe {
                kernel.launch(
                    stream.cu_stream(),
                    (1, 1, 1),
                    &mut [
                        arg(&mut d_step),
                        arg(&mut d_count),
                        arg(&mut d_plans),
                        arg(&mut base),
                        &mut n as *mut u32 as *mut std::ffi::c_void,
                        arg(&mut d_current),
                    ],
                )?
            };
        }
        self.h_count.download(stream, &self.d_count)?;
        self.pending = Some((n_plans, precision));
        Ok(())
    }
}
