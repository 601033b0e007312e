//! Gradient element types and their selection keys.
//!
//! The key of a value is its bit pattern with the sign bit cleared. For non-negative IEEE floats the
//! bit pattern orders exactly like the value, so |g| can be ranked with integer radix digits; NaN
//! keys sort above +Inf. f32 keys have 31 significant bits, bf16 and f16 keys 15.

use half::{bf16, f16};

/// The element types a gradient or parameter buffer may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    BF16,
    F16,
}

impl DType {
    /// Size of one element in bytes.
    pub const fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
        }
    }

    /// Number of significant bits of a selection key of this type (the sign is dropped).
    pub const fn key_bits(self) -> u32 {
        match self {
            DType::F32 => 31,
            DType::BF16 | DType::F16 => 15,
        }
    }

    /// The smallest key of a non-finite value (+Inf); every key at or above it is Inf or NaN.
    pub const fn non_finite_key(self) -> u32 {
        match self {
            DType::F32 => 0x7f80_0000,
            DType::BF16 => 0x7f80,
            DType::F16 => 0x7c00,
        }
    }

    /// The value whose key is `key`, widened to f32 (exact for every type here).
    pub fn key_to_f32(self, key: u32) -> f32 {
        match self {
            DType::F32 => f32::from_bits(key),
            DType::BF16 => bf16::from_bits(key as u16).to_f32(),
            DType::F16 => f16::from_bits(key as u16).to_f32(),
        }
    }
}

/// A gradient element: f32, bf16 or f16.
pub trait GradElem: Copy + Send + Sync + bytemuck::Pod + 'static {
    /// The runtime tag of this type.
    const DTYPE: DType;
    /// The selection key: the bit pattern without its sign.
    fn key(self) -> u32;
    /// The value widened to f32 (exact).
    fn to_f32(self) -> f32;
}

impl GradElem for f32 {
    const DTYPE: DType = DType::F32;
    #[inline(always)]
    fn key(self) -> u32 {
        self.to_bits() & 0x7fff_ffff
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl GradElem for bf16 {
    const DTYPE: DType = DType::BF16;
    #[inline(always)]
    fn key(self) -> u32 {
        u32::from(self.to_bits() & 0x7fff)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }
}

impl GradElem for f16 {
    const DTYPE: DType = DType::F16;
    #[inline(always)]
    fn key(self) -> u32 {
        u32::from(self.to_bits() & 0x7fff)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_like_magnitudes() {
        let values = [0.0f32, 1e-45, 1e-38, 0.5, 1.0, 3.0e38, f32::INFINITY];
        for pair in values.windows(2) {
            assert!(pair[0].key() < pair[1].key());
            assert!((-pair[0]).key() < pair[1].key());
        }
        assert!(f32::NAN.key() > f32::INFINITY.key());
        assert_eq!((-0.0f32).key(), 0);
    }

    #[test]
    fn non_finite_keys_start_at_inf() {
        assert_eq!(f32::INFINITY.key(), DType::F32.non_finite_key());
        assert_eq!(bf16::INFINITY.key(), DType::BF16.non_finite_key());
        assert_eq!(f16::INFINITY.key(), DType::F16.non_finite_key());
        assert!(f16::MAX.key() < DType::F16.non_finite_key());
        assert!(bf16::MAX.key() < DType::BF16.non_finite_key());
    }

    #[test]
    fn key_round_trips_to_f32() {
        for v in [0.0f32, 1.5, 65504.0, 1e-7] {
            assert_eq!(DType::F32.key_to_f32(v.key()), v);
            let b = bf16::from_f32(v);
            assert_eq!(DType::BF16.key_to_f32(b.key()), b.to_f32());
            let h = f16::from_f32(v);
            assert_eq!(DType::F16.key_to_f32(h.key()), h.to_f32());
        }
    }
}
