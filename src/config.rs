//! What to mask: `MaskConfig`, `Scope`, `MaskedUpdate`.

use crate::{Error, Result};

/// Which entries compete with each other for the kept fraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    /// Each tensor is its own selection group (GMT as practised).
    #[default]
    PerTensor,
    /// One selection group for the whole model.
    Global,
    /// The group ids given to the [`TensorTable`](crate::TensorTable) (e.g. one per transformer block).
    Groups,
}

/// What happens to a masked entry in the optimizer step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaskedUpdate {
    /// The masked gradient counts as 0: moments decay, the parameter still moves by momentum and
    /// weight decay (GMT with a standard AdamW).
    #[default]
    ZeroGrad,
    /// The masked entry is untouched: parameter and moments keep their values (the paper's Eq. 1).
    Freeze,
}

/// The masking part of a GMT step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskConfig {
    /// Fraction of each group's entries that is masked (zeroed), in [0, 1]. The paper's "mask ratio
    /// 20%" is 0.2: 80% of the entries are updated.
    pub mask_ratio: f64,
    /// The selection groups.
    pub scope: Scope,
    /// What a masked entry does in the update.
    pub masked: MaskedUpdate,
}

impl Default for MaskConfig {
    fn default() -> Self {
        MaskConfig {
            mask_ratio: 0.0,
            scope: Scope::PerTensor,
            masked: MaskedUpdate::ZeroGrad,
        }
    }
}

impl MaskConfig {
    /// Checks that `mask_ratio` is a number in [0, 1].
    pub fn validate(&self) -> Result<()> {
        validate_ratio(self.mask_ratio)
    }
}

/// Checks a mask ratio: a number in [0, 1].
pub fn validate_ratio(mask_ratio: f64) -> Result<()> {
    if (0.0..=1.0).contains(&mask_ratio) {
        Ok(())
    } else {
        Err(Error::InvalidConfig {
            name: "mask_ratio",
            value: mask_ratio,
            expected: "a number in [0, 1]",
        })
    }
}

/// Entries kept in a group of `len` entries at `mask_ratio`: `len - floor(mask_ratio * len)`.
/// The ratio must already be valid.
pub fn kept_target(len: u64, mask_ratio: f64) -> u64 {
    let masked = (mask_ratio * len as f64).floor() as u64;
    len - masked.min(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_outside_the_unit_interval_are_rejected() {
        for bad in [-1e-9, 1.0 + 1e-9, f64::NAN, f64::INFINITY] {
            assert!(validate_ratio(bad).is_err(), "{bad}");
        }
        for good in [0.0, 1e-6, 0.5, 1.0] {
            assert!(validate_ratio(good).is_ok());
        }
    }

    #[test]
    fn kept_target_follows_the_floor_rule() {
        assert_eq!(kept_target(10, 0.0), 10);
        assert_eq!(kept_target(10, 1.0), 0);
        assert_eq!(kept_target(10, 0.25), 8); // floor(2.5) = 2 masked
        assert_eq!(kept_target(3, 1.0 - 1e-6), 1);
        assert_eq!(kept_target(0, 0.5), 0);
    }
}
