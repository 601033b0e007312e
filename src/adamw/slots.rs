//! Where the parameters of one chunk live and how an updated value is stored: f32, bf16 with f32
//! master weights (round to nearest even), bf16 with stochastic rounding. The update loop is
//! generic over these, so each combination compiles to its own vectorized loop.

use half::bf16;

use super::math::{bf16_round_nearest, select};
use crate::rng::{draw, stochastic_round_bf16};

/// Where one chunk's parameters live and how a new value is stored.
pub(crate) trait ParamSlots {
    fn get(&self, i: usize) -> f32;
    /// Stores `x` at `i` (global index `index`) when `write`; otherwise leaves the entry as it is.
    fn set(&mut self, i: usize, x: f32, index: u64, write: bool);
}

/// f32 parameters.
pub(crate) struct F32Slots<'a>(pub &'a mut [f32]);

impl ParamSlots for F32Slots<'_> {
    #[inline(always)]
    fn get(&self, i: usize) -> f32 {
        self.0[i]
    }
    #[inline(always)]
    fn set(&mut self, i: usize, x: f32, _index: u64, write: bool) {
        self.0[i] = select(write, x, self.0[i]);
    }
}

/// bf16 parameters with f32 master weights: the master is updated, the parameter is its
/// round-to-nearest-even bf16.
pub(crate) struct MasterSlots<'a> {
    pub params: &'a mut [bf16],
    pub master: &'a mut [f32],
}

impl ParamSlots for MasterSlots<'_> {
    #[inline(always)]
    fn get(&self, i: usize) -> f32 {
        self.master[i]
    }
    #[inline(always)]
    fn set(&mut self, i: usize, x: f32, _index: u64, write: bool) {
        self.master[i] = select(write, x, self.master[i]);
        let rounded = bf16_round_nearest(x).to_bits();
        self.params[i] = bf16::from_bits(if write {
            rounded
        } else {
            self.params[i].to_bits()
        });
    }
}

/// bf16 parameters without master weights, stochastically rounded with the stream `key`.
pub(crate) struct RoundSlots<'a> {
    pub params: &'a mut [bf16],
    pub key: u64,
}

impl ParamSlots for RoundSlots<'_> {
    #[inline(always)]
    fn get(&self, i: usize) -> f32 {
        self.params[i].to_f32()
    }
    #[inline(always)]
    fn set(&mut self, i: usize, x: f32, index: u64, write: bool) {
        let rounded = stochastic_round_bf16(x, draw(self.key, index)).to_bits();
        self.params[i] = bf16::from_bits(if write {
            rounded
        } else {
            self.params[i].to_bits()
        });
    }
}
