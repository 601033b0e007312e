//! Counter-based random numbers keyed by (seed, step, global element index), for the random-mask
//! baseline and for stochastic rounding to bf16. Each draw depends only on its key, never on the
//! chunking, the thread count or the launch geometry, so the CPU engine and a CUDA kernel that
//! follows the recipe below produce the same bits.
//!
//! The recipe, in 64-bit unsigned arithmetic with wrapping multiplication and addition:
//!
//! ```text
//! GOLDEN = 0x9E37_79B9_7F4A_7C15
//! fmix(z):        z = (z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9
//!                 z = (z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB
//!                 return z ^ (z >> 31)
//! splitmix(x):    return fmix(x + GOLDEN)
//! stream(s, t):   return splitmix(s ^ splitmix(t))                    // once per step, on the host
//! draw(k, i):     return (fmix(k + (i + 1) * GOLDEN) >> 32) as u32    // per element
//! mix(s, t, i):   return draw(stream(s, t), i)
//! ```
//!
//! `draw(k, i)` is the i-th output (high half) of SplitMix64 seeded with `k`. Which seed feeds
//! which use:
//! - random mask: `mix(mask_seed, step, index)`; the entry is kept when the draw, widened to u64,
//!   is `>= random_cut(mask_ratio)`;
//! - stochastic rounding: `mix(round_seed ^ ROUNDING_DOMAIN, step, index)`, low 16 bits, see
//!   [`stochastic_round_bf16`].
//!
//! `step` is the 1-based AdamW step being taken, `index` the entry's offset in the concatenation of
//! every tensor of the table ([`TensorTable::offsets`](crate::TensorTable::offsets)).

use half::bf16;

/// The golden-ratio increment of SplitMix64.
pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// XOR-ed into the stochastic-rounding seed so that a rounding stream never equals a mask stream,
/// even when a caller passes the same seed to both.
pub const ROUNDING_DOMAIN: u64 = 0xA076_1D64_78BD_642F;

/// The SplitMix64 finalizer (a bijection of u64).
#[inline(always)]
pub const fn fmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One SplitMix64 step from state `x`: `fmix(x + GOLDEN)`.
#[inline(always)]
pub const fn splitmix(x: u64) -> u64 {
    fmix(x.wrapping_add(GOLDEN))
}

/// The key of the stream for `seed` at `step`; compute it once per step.
#[inline]
pub const fn stream(seed: u64, step: u64) -> u64 {
    splitmix(seed ^ splitmix(step))
}

/// The draw of element `index` in the stream `key`.
#[inline(always)]
pub const fn draw(key: u64, index: u64) -> u32 {
    (fmix(key.wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN))) >> 32) as u32
}

/// The 32-bit draw for (`seed`, `step`, global element `index`): `draw(stream(seed, step), index)`.
#[inline]
pub const fn mix(seed: u64, step: u64, index: u64) -> u32 {
    draw(stream(seed, step), index)
}

/// The random-mask cut for `mask_ratio` in [0, 1]: `floor(mask_ratio * 2^32)`, in [0, 2^32]. An
/// entry is kept when `u64::from(draw) >= cut`, so it is kept with probability
/// `1 - cut / 2^32` (within 2^-32 of `1 - mask_ratio`); ratio 1 keeps nothing.
pub fn random_cut(mask_ratio: f64) -> u64 {
    (mask_ratio * 4_294_967_296.0).floor() as u64
}

/// Rounds `x` to bf16 stochastically with 16 random bits from `draw` (its low half): adds them to
/// the 16 bits that bf16 drops and truncates. An f32 between two bf16 values rounds away from zero
/// with probability (distance to the lower magnitude) / (gap), so the rounding is unbiased; values
/// that are already bf16 are unchanged. A finite value just below the largest bf16 rounds to Inf
/// with the probability of its distance to 2^128. NaN stays NaN (the quiet bit is above the sum).
#[inline(always)]
pub fn stochastic_round_bf16(x: f32, draw: u32) -> bf16 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(draw & 0xFFFF) >> 16;
    let quiet_nan = (bits >> 16) | 0x0040;
    bf16::from_bits(if x.is_nan() { quiet_nan } else { rounded } as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_published_sequence() {
        // SplitMix64 seeded with 0 (Vigna's reference implementation): first three outputs.
        let outputs: Vec<u64> = (1..=3u64).map(|i| fmix(i.wrapping_mul(GOLDEN))).collect();
        assert_eq!(
            outputs,
            vec![
                0xE220_A839_7B1D_CDAF,
                0x6E78_9E6A_A1B9_65F4,
                0x06C4_5D18_8009_454F
            ]
        );
        assert_eq!(draw(0, 0), 0xE220_A839);
        assert_eq!(draw(0, 2), 0x06C4_5D18);
    }

    #[test]
    fn mix_depends_on_every_part_of_its_key() {
        let base = mix(7, 3, 11);
        assert_ne!(base, mix(8, 3, 11));
        assert_ne!(base, mix(7, 4, 11));
        assert_ne!(base, mix(7, 3, 12));
        assert_eq!(base, draw(stream(7, 3), 11));
    }

    #[test]
    fn random_cut_edges() {
        assert_eq!(random_cut(0.0), 0);
        assert_eq!(random_cut(0.5), 1 << 31);
        assert_eq!(random_cut(1.0), 1 << 32);
        assert!(u64::from(u32::MAX) < random_cut(1.0)); // ratio 1 keeps nothing
    }

    #[test]
    fn stochastic_rounding_picks_a_neighbour_without_bias() {
        let exact = bf16::from_f32(1.5);
        for draw in [0, 1, 0x7FFF, 0xFFFF, 0xDEAD_BEEF] {
            assert_eq!(stochastic_round_bf16(1.5, draw), exact);
        }
        // 1 + 2^-9: a quarter of the way from 1 to the next bf16 (1 + 2^-7).
        let x = 1.0 + 2f32.powi(-9);
        let (lo, hi) = (bf16::from_f32(1.0), bf16::from_f32(1.0 + 2f32.powi(-7)));
        let ups = (0..65536u32)
            .filter(|&d| {
                let r = stochastic_round_bf16(x, d);
                assert!(r == lo || r == hi);
                r == hi
            })
            .count();
        assert_eq!(ups, 16384);
        let neg = stochastic_round_bf16(-x, 0xFFFF);
        assert_eq!(neg, -hi);
        assert!(stochastic_round_bf16(f32::NAN, 0xFFFF).is_nan());
    }
}
