//! `ExactSum`: the sum of g^2 that does not depend on how the entries are split between tasks or
//! ranks.
//!
//! The canonical sum of squares of a tensor is defined in two levels:
//! 1. **Leaves.** The tensor is cut at multiples of [`SUM_LEAF_LEN`] (512) entries of its own index.
//!    A leaf's sum is computed in f64 with 16 lanes: entry `i` of the leaf goes to lane `i % 16`, in
//!    order, as `f * f` with `f = g as f64` (exact), then the lanes are added by a fixed pairwise
//!    tree (`pass1::reduce_lanes`). Every pass-1 variant computes leaves this way.
//! 2. **Leaves to totals.** The leaf sums are added *exactly*, in a wide fixed-point integer
//!    (`ExactSum`), and rounded to f64 once, to nearest, ties to even.
//!
//! Exact integer addition is associative, so a group's or a model's sum has the same bits whatever
//! the chunking, the thread count or the shard layout, as long as every leaf is summed whole. A
//! leaf that a shard boundary cuts is summed by every rank from its entries, which the ranks
//! exchange (`shard::exchange`). The limbs are u64 words holding 32 bits each, so several
//! accumulators add limb-wise with plain u64 sums: the same all-reduce as the histograms.

use crate::tuning::SUM_LEAF_LEN;

/// Bits of value per limb; the other 32 bits of each u64 absorb carries between normalizations.
const LIMB_BITS: u32 = 32;
/// Limbs covering every finite non-negative f64 (bit offsets 0..2098 in units of 2^-1074) plus 64
/// bits of headroom for the count of leaves added.
pub(crate) const LIMBS: usize = 68;
/// Words an accumulator occupies in an all-reduce buffer: the limbs, then the +Inf and NaN counts.
pub(crate) const SUM_WORDS: usize = LIMBS + 2;

const _: () = assert!(SUM_LEAF_LEN.is_multiple_of(16));

/// An exact sum of non-negative f64 values (plus counts of +Inf and NaN ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExactSum {
    limbs: [u64; LIMBS],
    inf: u64,
    nan: u64,
}

impl Default for ExactSum {
    fn default() -> Self {
        ExactSum {
            limbs: [0; LIMBS],
            inf: 0,
            nan: 0,
        }
    }
}

impl ExactSum {
    /// Adds `x`, a leaf sum: >= 0, +Inf or NaN. Each limb grows by less than 2^32, so 2^32 adds fit
    /// between normalizations; a chunk adds at most `CPU_CHUNK_LEN / SUM_LEAF_LEN` leaves and
    /// [`ExactSum::merge`] normalizes.
    #[inline]
    pub fn add(&mut self, x: f64) {
        if x.is_nan() {
            self.nan += 1;
            return;
        }
        if x == f64::INFINITY {
            self.inf += 1;
            return;
        }
        debug_assert!(x >= 0.0, "sums of squares are not negative: {x}");
        let bits = x.to_bits() & 0x7fff_ffff_ffff_ffff;
        if bits == 0 {
            return;
        }
        let exponent = (bits >> 52) as u32;
        let fraction = bits & ((1 << 52) - 1);
        let (mantissa, offset) = if exponent == 0 {
            (fraction, 0) // subnormal: fraction * 2^-1074
        } else {
            (fraction | (1 << 52), exponent - 1) // (2^52 + fraction) * 2^(exponent - 1075)
        };
        let (limb, shift) = ((offset / LIMB_BITS) as usize, offset % LIMB_BITS);
        let wide = u128::from(mantissa) << shift; // at most 85 bits
        self.limbs[limb] += (wide as u64) & 0xffff_ffff;
        self.limbs[limb + 1] += ((wide >> 32) as u64) & 0xffff_ffff;
        self.limbs[limb + 2] += (wide >> 64) as u64;
    }

    /// Adds `other` (normalized or not, up to 2^62 per limb) and normalizes.
    pub fn merge(&mut self, other: &ExactSum) {
        for (a, b) in self.limbs.iter_mut().zip(&other.limbs) {
            *a += b;
        }
        self.inf += other.inf;
        self.nan += other.nan;
        self.normalize();
    }

    /// Moves carries up so that every limb holds at most 32 bits.
    fn normalize(&mut self) {
        let mut carry = 0u64;
        for limb in &mut self.limbs {
            let value = *limb + carry;
            *limb = value & 0xffff_ffff;
            carry = value >> LIMB_BITS;
        }
        debug_assert_eq!(carry, 0, "ExactSum overflowed its headroom");
    }

    /// The normalized words of this sum, for an all-reduce buffer of [`SUM_WORDS`] words.
    pub fn write_words(&self, out: &mut [u64]) {
        let mut normal = *self;
        normal.normalize();
        out[..LIMBS].copy_from_slice(&normal.limbs);
        out[LIMBS] = normal.inf;
        out[LIMBS + 1] = normal.nan;
    }

    /// The sum held in `words` (the element-wise sum of up to 2^30 ranks' [`write_words`]).
    pub fn from_words(words: &[u64]) -> Self {
        let mut sum = ExactSum::default();
        sum.limbs.copy_from_slice(&words[..LIMBS]);
        sum.inf = words[LIMBS];
        sum.nan = words[LIMBS + 1];
        sum.normalize();
        sum
    }

    /// The sum rounded to the nearest f64 (ties to even); NaN when a NaN was added, else +Inf when
    /// an Inf was added or the sum overflows.
    pub fn to_f64(self) -> f64 {
        if self.nan > 0 {
            return f64::NAN;
        }
        if self.inf > 0 {
            return f64::INFINITY;
        }
        let mut normal = self;
        normal.normalize();
        let limbs = &normal.limbs;
        let Some(top_limb) = limbs.iter().rposition(|&l| l != 0) else {
            return 0.0;
        };
        // Bit index of the highest set bit of the integer (units of 2^-1074).
        let high = top_limb as u32 * LIMB_BITS + (63 - limbs[top_limb].leading_zeros());
        if high < 53 {
            // Below 2^53 units every integer is an f64 (subnormal, or the first normal binade).
            let value = limbs[0] | (limbs[1] << 32);
            return (value as f64) * f64::from_bits(1);
        }
        let mantissa = bits_at(limbs, high - 52, 53);
        let round = bits_at(limbs, high - 53, 1) == 1;
        let sticky = high >= 54 && any_below(limbs, high - 53);
        let (mut mantissa, mut high) = (mantissa, high);
        if round && (sticky || mantissa & 1 == 1) {
            mantissa += 1;
            if mantissa == 1 << 53 {
                mantissa >>= 1;
                high += 1;
            }
        }
        let biased = u64::from(high) - 51; // value = mantissa * 2^(high - 52 - 1074)
        if biased >= 2047 {
            return f64::INFINITY;
        }
        f64::from_bits((biased << 52) | (mantissa & ((1 << 52) - 1)))
    }
}

/// `count` (<= 64) bits of the normalized integer `limbs`, from bit `from` up.
fn bits_at(limbs: &[u64; LIMBS], from: u32, count: u32) -> u64 {
    let limb = (from / LIMB_BITS) as usize;
    let mut window = 0u128;
    for (i, &l) in limbs[limb..].iter().take(4).enumerate() {
        window |= u128::from(l) << (32 * i);
    }
    ((window >> (from % LIMB_BITS)) as u64) & (u64::MAX >> (64 - count))
}

/// Whether any bit of the normalized integer below bit `bit` is set.
fn any_below(limbs: &[u64; LIMBS], bit: u32) -> bool {
    let limb = (bit / LIMB_BITS) as usize;
    let partial = limbs[limb] & ((1u64 << (bit % LIMB_BITS)) - 1);
    partial != 0 || limbs[..limb].iter().any(|&l| l != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exact(values: &[f64]) -> f64 {
        let mut sum = ExactSum::default();
        values.iter().for_each(|&v| sum.add(v));
        sum.to_f64()
    }

    #[test]
    fn single_values_round_trip() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut values = vec![0.0, f64::from_bits(1), f64::MIN_POSITIVE, 1.0, f64::MAX];
        for _ in 0..2000 {
            seed = crate::rng::splitmix(seed);
            values.push(f64::from_bits(seed >> 1)); // any non-negative bit pattern
        }
        for v in values.into_iter().filter(|v| v.is_finite()) {
            assert_eq!(exact(&[v]).to_bits(), v.to_bits(), "{v:e}");
        }
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        let ulp = f64::EPSILON; // ulp of 1.0
        assert_eq!(exact(&[1.0, ulp / 2.0]), 1.0); // a tie: stays on the even 1.0
        assert_eq!(exact(&[1.0 + ulp, ulp / 2.0]), 1.0 + 2.0 * ulp); // a tie: up to even
        assert_eq!(exact(&[1.0, ulp / 2.0, ulp / 1024.0]), 1.0 + ulp); // above the tie
        assert_eq!(exact(&[1.0, ulp / 4.0]), 1.0);
        // Many tiny values that f64 addition would lose one by one.
        let tiny = vec![ulp / 4.0; 8];
        assert_eq!(exact(&[&[1.0][..], &tiny].concat()), 1.0 + 2.0 * ulp);
        assert_eq!(exact(&[f64::MAX, f64::MAX]), f64::INFINITY);
        assert!(exact(&[1.0, f64::NAN, f64::INFINITY]).is_nan());
        assert_eq!(exact(&[1.0, f64::INFINITY]), f64::INFINITY);
        assert_eq!(
            exact(&[f64::from_bits(1), f64::from_bits(3)]),
            f64::from_bits(4)
        );
    }

    /// Any order and any grouping into partial sums give the same bits, close to the f64 sum.
    #[test]
    fn order_and_grouping_do_not_matter() {
        let mut seed = 7u64;
        let values: Vec<f64> = (0..5000)
            .map(|i| {
                seed = crate::rng::splitmix(seed);
                let scale = [1e-30, 1e-3, 1.0, 1e12][i % 4];
                (seed >> 11) as f64 / (1u64 << 53) as f64 * scale
            })
            .collect();
        let whole = exact(&values);
        let naive: f64 = values.iter().sum();
        assert!((whole - naive).abs() <= 1e-12 * naive);
        let mut reversed = values.clone();
        reversed.reverse();
        assert_eq!(exact(&reversed).to_bits(), whole.to_bits());
        for parts in [2usize, 3, 7, 64] {
            let mut total = ExactSum::default();
            for part in values.chunks(values.len().div_ceil(parts)) {
                let mut partial = ExactSum::default();
                part.iter().for_each(|&v| partial.add(v));
                let mut words = [0u64; SUM_WORDS];
                partial.write_words(&mut words);
                total.merge(&ExactSum::from_words(&words));
            }
            assert_eq!(total.to_f64().to_bits(), whole.to_bits(), "{parts} parts");
        }
    }
}
