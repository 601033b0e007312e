//! The two forms of pass 1, the only full read of the gradients on the CPU when speculation hits.
//!
//! - [`first_digit_histogram`]: the 12-bit first-digit histogram of a chunk (plus sum of g^2).
//! - [`window_pass`]: for a group whose bucket is expected within a window of first-digit bins
//!   (where the previous call found it), counts the keys above the window and copies out the keys
//!   inside it; no histogram. Counting vectorizes, so this runs near memory bandwidth.
//!
//! Both are compiled twice on x86-64, for the baseline target and for AVX2+FMA, and pick the second
//! at run time when the CPU has it.
//!
//! Every variant adds the sum of g^2 of each leaf of `data` to an [`ExactSum`] (see `exact_sum.rs`
//! for the canonical sum): `data` must start at a leaf boundary of its tensor, or the caller
//! discards the sum (a piece of a leaf that a shard boundary cuts).

use super::exact_sum::ExactSum;
use crate::tuning::{CPU_CHUNK_LEN, SUM_LEAF_LEN};
use crate::GradElem;

/// Entries per block of the histogram loop: keys are computed with vector code for a block, then
/// histogrammed from L1. One leaf of the canonical sum.
const BLOCK: usize = SUM_LEAF_LEN;
/// Entries per step of the window loop (one vector iteration's worth of lanes).
const LANES: usize = 16;

/// Adds the squares of `values` (at most one leaf) to the canonical lanes: entry i goes to lane `i % LANES`, in
/// order, with a separate multiply and add (no FMA). Every pass-1 variant sums this way and reduces
/// with [`reduce_lanes`], so the sum of g^2 has the same bits whichever variant ran.
#[inline(always)]
fn add_squares<T: GradElem>(lanes: &mut [f64; LANES], values: &[T]) {
    let mut blocks = values.chunks_exact(LANES);
    for block in &mut blocks {
        for (lane, x) in lanes.iter_mut().zip(block) {
            let f = f64::from(x.to_f32());
            *lane += f * f;
        }
    }
    for (lane, x) in lanes.iter_mut().zip(blocks.remainder()) {
        let f = f64::from(x.to_f32());
        *lane += f * f;
    }
}

/// The canonical reduction of the lanes: a fixed pairwise tree.
#[inline(always)]
pub(crate) fn reduce_lanes(lanes: &[f64; LANES]) -> f64 {
    let mut width = LANES;
    let mut partial = *lanes;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            partial[i] += partial[i + width];
        }
    }
    partial[0]
}

/// A range of keys `[lo, lo + span]`: the keys of a run of first-digit bins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyWindow {
    pub lo: u32,
    pub span: u32,
}

impl KeyWindow {
    /// The keys of first-digit bins `lo_bin..=hi_bin` for a digit at `shift`.
    pub fn from_bins(lo_bin: u32, hi_bin: u32, shift: u32) -> Self {
        KeyWindow {
            lo: lo_bin << shift,
            span: ((hi_bin - lo_bin + 1) << shift) - 1,
        }
    }

    #[inline(always)]
    pub fn contains(&self, key: u32) -> bool {
        key.wrapping_sub(self.lo) <= self.span
    }
}

/// The canonical sum of squares of one whole leaf given as f32 values (a leaf that a shard
/// boundary cut, put back together from the ranks' entries): the bits the pass-1 variants give.
pub(crate) fn leaf_sum(values: &[f32]) -> f64 {
    debug_assert!(values.len() <= SUM_LEAF_LEN);
    let mut lanes = [0.0f64; LANES];
    add_squares(&mut lanes, values);
    reduce_lanes(&lanes)
}

/// What a chunk's window pass found.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WindowCounts {
    /// Keys above the window.
    pub above: u64,
    pub non_finite: u64,
    /// Keys copied out; None when `out` filled up (then the other counts are incomplete).
    pub written: Option<usize>,
}

/// Builds the first-digit histogram of `data` into `hist` (added to, not cleared) and adds its
/// leaves' sums of g^2 to `sum`. `shift` is the first digit's shift for `T`. Two interleaved sub-histograms (`spare`
/// is the second) break the store-to-load dependency when consecutive entries share a bin.
/// `data` is one chunk: its counts fit the u32 bins (see `tuning::CPU_CHUNK_LEN`).
pub fn first_digit_histogram<T: GradElem>(
    data: &[T],
    shift: u32,
    hist: &mut [u32],
    spare: &mut [u32],
    sum: &mut ExactSum,
) {
    debug_assert!(data.len() <= CPU_CHUNK_LEN, "u32 counts hold one chunk");
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { histogram_avx2(data, shift, hist, spare, sum) };
    }
    histogram_body(data, shift, hist, spare, sum)
}

/// Counts and copies out `data`'s keys against `window` (see the module doc); `out` receives the
/// keys inside it, and `sum` the leaves' sums of g^2 (incomplete when the copy overflows). `data`
/// is one chunk: its counts are u32.
pub fn window_pass<T: GradElem>(
    data: &[T],
    window: KeyWindow,
    non_finite_key: u32,
    out: &mut [u32],
    sum: &mut ExactSum,
) -> WindowCounts {
    debug_assert!(data.len() <= CPU_CHUNK_LEN, "u32 counts hold one chunk");
    by_leaves(data, window, non_finite_key, out, sum, window_leaf)
}

/// The window pass leaf by leaf, with `per_leaf` for each leaf.
#[inline(always)]
fn by_leaves<T: GradElem>(
    data: &[T],
    window: KeyWindow,
    non_finite_key: u32,
    out: &mut [u32],
    sum: &mut ExactSum,
    per_leaf: impl Fn(&[T], KeyWindow, u32, &mut [u32]) -> (WindowCounts, f64),
) -> WindowCounts {
    let mut found = WindowCounts::default();
    let mut written = 0;
    for leaf in data.chunks(SUM_LEAF_LEN) {
        let (counts, leaf_sum) = per_leaf(leaf, window, non_finite_key, &mut out[written..]);
        let Some(n) = counts.written else {
            return WindowCounts::default();
        };
        written += n;
        found.above += counts.above;
        found.non_finite += counts.non_finite;
        sum.add(leaf_sum);
    }
    found.written = Some(written);
    found
}

/// The window pass over one leaf (or a piece of one): its counts and its canonical sum of g^2.
#[inline]
fn window_leaf<T: GradElem>(
    leaf: &[T],
    window: KeyWindow,
    non_finite_key: u32,
    out: &mut [u32],
) -> (WindowCounts, f64) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { window_avx512(leaf, window, non_finite_key, out) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { window_avx2(leaf, window, non_finite_key, out) };
    }
    window_body(leaf, window, non_finite_key, out)
}

/// Adds the leaves' sums of g^2 of `data` to `sum` (the same bits as pass 1's) and returns the
/// count of its Inf/NaN entries: what pass 1 reports for a chunk, without the selection. The
/// optimizer's mask-off scan. `data` is one chunk: the count is u32.
pub(crate) fn sum_sq_and_non_finite<T: GradElem>(data: &[T], sum: &mut ExactSum) -> u64 {
    debug_assert!(data.len() <= CPU_CHUNK_LEN, "u32 counts hold one chunk");
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { scan_avx2(data, sum) };
    }
    scan_body(data, sum)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scan_avx2<T: GradElem>(data: &[T], sum: &mut ExactSum) -> u64 {
    scan_body(data, sum)
}

#[inline(always)]
fn scan_body<T: GradElem>(data: &[T], sum: &mut ExactSum) -> u64 {
    let non_finite_key = T::DTYPE.non_finite_key();
    for leaf in data.chunks(SUM_LEAF_LEN) {
        let mut lanes = [0.0f64; LANES];
        add_squares(&mut lanes, leaf);
        sum.add(reduce_lanes(&lanes));
    }
    let non_finite = data
        .iter()
        .map(|x| u32::from(x.key() >= non_finite_key))
        .sum::<u32>();
    u64::from(non_finite)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn histogram_avx2<T: GradElem>(
    data: &[T],
    shift: u32,
    hist: &mut [u32],
    spare: &mut [u32],
    sum: &mut ExactSum,
) {
    histogram_body(data, shift, hist, spare, sum)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn window_avx2<T: GradElem>(
    data: &[T],
    window: KeyWindow,
    non_finite_key: u32,
    out: &mut [u32],
) -> (WindowCounts, f64) {
    window_body(data, window, non_finite_key, out)
}

/// The window pass with AVX-512, for every gradient dtype: 16 entries at a time, keys widened to
/// 32 bits; counts from comparison masks; the keys inside the window packed with a register
/// compress and one full-width store (never a compress-to-memory, which is slow on some cores);
/// the values widened to f64 for the canonical sum of squares. The tail (fewer than 16 entries)
/// goes through the portable body.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn window_avx512<T: GradElem>(
    data: &[T],
    window: KeyWindow,
    non_finite_key: u32,
    out: &mut [u32],
) -> (WindowCounts, f64) {
    use std::arch::x86_64::*;
    let lo = _mm512_set1_epi32(window.lo as i32);
    let span = _mm512_set1_epi32(window.span as i32);
    let top = _mm512_set1_epi32(window.lo.wrapping_add(window.span) as i32);
    let non_finite_at = _mm512_set1_epi32(non_finite_key as i32);
    let (mut above, mut non_finite, mut written) = (0u64, 0u64, 0usize);
    let (mut sq_low, mut sq_high) = (_mm512_setzero_pd(), _mm512_setzero_pd());
    let mut blocks = data.chunks_exact(LANES);
    for block in &mut blocks {
        if written + LANES > out.len() {
            return (WindowCounts::default(), 0.0);
        }
        // SAFETY: `block` holds 16 entries and `out[written..written + 16]` is in bounds (checked
        // above); unaligned loads and stores are used throughout.
        unsafe {
            let (keys, values) = load16(block);
            above += u64::from(_mm512_cmpgt_epu32_mask(keys, top).count_ones());
            non_finite += u64::from(_mm512_cmpge_epu32_mask(keys, non_finite_at).count_ones());
            let inside = _mm512_cmple_epu32_mask(_mm512_sub_epi32(keys, lo), span);
            _mm512_storeu_si512(
                out.as_mut_ptr().add(written).cast(),
                _mm512_maskz_compress_epi32(inside, keys),
            );
            written += inside.count_ones() as usize;
            let high_half = _mm512_extractf64x4_pd(_mm512_castps_pd(values), 1);
            let low = _mm512_cvtps_pd(_mm512_castps512_ps256(values));
            let high = _mm512_cvtps_pd(_mm256_castpd_ps(high_half));
            // Multiply, then add: the canonical lanes (see `add_squares`), not an FMA.
            sq_low = _mm512_add_pd(sq_low, _mm512_mul_pd(low, low));
            sq_high = _mm512_add_pd(sq_high, _mm512_mul_pd(high, high));
        }
    }
    let mut lanes = [0.0f64; LANES];
    // SAFETY: `lanes` holds 16 f64, two unaligned 8-lane stores.
    unsafe {
        _mm512_storeu_pd(lanes.as_mut_ptr(), sq_low);
        _mm512_storeu_pd(lanes.as_mut_ptr().add(8), sq_high);
    }
    add_squares(&mut lanes, blocks.remainder());
    let (tail, _) = window_body(
        blocks.remainder(),
        window,
        non_finite_key,
        &mut out[written..],
    );
    let Some(tail_written) = tail.written else {
        return (WindowCounts::default(), 0.0);
    };
    let counts = WindowCounts {
        above: above + tail.above,
        non_finite: non_finite + tail.non_finite,
        written: Some(written + tail_written),
    };
    (counts, reduce_lanes(&lanes))
}

/// The 32-bit keys and the f32 values of 16 entries (`block.len() == 16`).
///
/// # Safety
/// The CPU has AVX-512F and `block` holds 16 entries.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn load16<T: GradElem>(
    block: &[T],
) -> (std::arch::x86_64::__m512i, std::arch::x86_64::__m512) {
    use std::arch::x86_64::*;
    debug_assert_eq!(block.len(), LANES);
    // SAFETY: the block holds 16 entries of T (64 bytes for f32, 32 for bf16/f16), read unaligned.
    unsafe {
        match T::DTYPE {
            crate::DType::F32 => {
                let raw = _mm512_loadu_si512(block.as_ptr().cast());
                (
                    _mm512_and_si512(raw, _mm512_set1_epi32(0x7fff_ffff)),
                    _mm512_castsi512_ps(raw),
                )
            }
            crate::DType::BF16 => {
                let raw = _mm512_cvtepu16_epi32(_mm256_loadu_si256(block.as_ptr().cast()));
                let values = _mm512_castsi512_ps(_mm512_slli_epi32(raw, 16));
                (_mm512_and_si512(raw, _mm512_set1_epi32(0x7fff)), values)
            }
            crate::DType::F16 => {
                let raw16 = _mm256_loadu_si256(block.as_ptr().cast());
                let raw = _mm512_cvtepu16_epi32(raw16);
                (
                    _mm512_and_si512(raw, _mm512_set1_epi32(0x7fff)),
                    _mm512_cvtph_ps(raw16),
                )
            }
        }
    }
}

#[inline(always)]
fn histogram_body<T: GradElem>(
    data: &[T],
    shift: u32,
    hist: &mut [u32],
    spare: &mut [u32],
    sum: &mut ExactSum,
) {
    let mask = hist.len() - 1;
    debug_assert!(hist.len().is_power_of_two() && spare.len() == hist.len());
    spare.fill(0);
    let mut keys = [0u32; BLOCK];
    for block in data.chunks(BLOCK) {
        let keys = &mut keys[..block.len()];
        for (key, x) in keys.iter_mut().zip(block) {
            *key = x.key();
        }
        let mut lanes = [0.0f64; LANES]; // one block is one leaf
        add_squares(&mut lanes, block);
        sum.add(reduce_lanes(&lanes));
        let mut pairs = keys.chunks_exact(2);
        for pair in &mut pairs {
            hist[(pair[0] >> shift) as usize & mask] += 1;
            spare[(pair[1] >> shift) as usize & mask] += 1;
        }
        for &key in pairs.remainder() {
            hist[(key >> shift) as usize & mask] += 1;
        }
    }
    for (h, s) in hist.iter_mut().zip(spare.iter()) {
        *h += *s;
    }
}

#[inline(always)]
fn window_body<T: GradElem>(
    data: &[T],
    window: KeyWindow,
    non_finite_key: u32,
    out: &mut [u32],
) -> (WindowCounts, f64) {
    let above_key = window.lo.wrapping_add(window.span); // keys > this are above the window
    let mut above = [0u32; LANES];
    let mut non_finite = [0u32; LANES];
    let mut sum_sq = [0.0f64; LANES];
    let mut written = 0usize;
    let mut blocks = data.chunks_exact(LANES);
    for block in &mut blocks {
        let mut keys = [0u32; LANES];
        let mut hits = 0u32;
        for j in 0..LANES {
            let key = block[j].key();
            keys[j] = key;
            above[j] += u32::from(key > above_key);
            non_finite[j] += u32::from(key >= non_finite_key);
            hits |= u32::from(window.contains(key));
            let f = f64::from(block[j].to_f32());
            sum_sq[j] += f * f;
        }
        if hits != 0 {
            let Some(slots) = out.get_mut(written..written + LANES) else {
                return (WindowCounts::default(), 0.0);
            };
            let mut n = 0;
            for &key in &keys {
                slots[n] = key;
                n += usize::from(window.contains(key));
            }
            written += n;
        }
    }
    add_squares(&mut sum_sq, blocks.remainder());
    let leaf_sum = reduce_lanes(&sum_sq);
    let mut counts = WindowCounts {
        above: above.iter().map(|&c| u64::from(c)).sum(),
        non_finite: non_finite.iter().map(|&c| u64::from(c)).sum(),
        written: Some(written),
    };
    for x in blocks.remainder() {
        let key = x.key();
        counts.above += u64::from(key > above_key);
        counts.non_finite += u64::from(key >= non_finite_key);
        if window.contains(key) {
            let Some(slot) = out.get_mut(written) else {
                return (WindowCounts::default(), 0.0);
            };
            *slot = key;
            written += 1;
        }
    }
    counts.written = Some(written);
    (counts, leaf_sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window pass with the portable leaf body, whatever the CPU has.
    pub(super) fn portable_window<T: GradElem>(
        data: &[T],
        window: KeyWindow,
        non_finite_key: u32,
        out: &mut [u32],
        sum: &mut ExactSum,
    ) -> WindowCounts {
        by_leaves(data, window, non_finite_key, out, sum, window_body)
    }

    #[test]
    fn histogram_counts_every_entry_once() {
        let data: Vec<f32> = (0..1001).map(|i| (i as f32 - 500.0) * 0.37).collect();
        let (mut hist, mut spare) = (vec![0u32; 4096], vec![0u32; 4096]);
        let mut sum = ExactSum::default();
        first_digit_histogram(&data, 19, &mut hist, &mut spare, &mut sum);
        assert_eq!(hist.iter().map(|&c| c as usize).sum::<usize>(), data.len());
        let exact: f64 = data.iter().map(|&x| (x as f64) * (x as f64)).sum();
        assert!((sum.to_f64() - exact).abs() <= 1e-12 * exact);
        for &x in &data {
            assert!(hist[(x.key() >> 19) as usize] > 0);
        }
    }

    #[test]
    fn the_window_counts_and_copies_exactly_its_keys() {
        for len in [0usize, 1, 15, 16, 17, 3001] {
            let mut data: Vec<f32> = (0..len).map(|i| (i as f32 - 1500.0) * 0.01).collect();
            if len > 3 {
                data[3] = f32::NAN;
            }
            let (lo_bin, hi_bin) = (0.5f32.key() >> 19, (0.5f32.key() >> 19) + 20);
            let window = KeyWindow::from_bins(lo_bin, hi_bin, 19);
            let mut out = vec![0u32; len + LANES];
            let (mut sum, mut portable_sum) = (ExactSum::default(), ExactSum::default());
            let counts = window_pass(&data, window, f32::INFINITY.key(), &mut out, &mut sum);
            // The portable body must agree with whichever path window_pass took on this CPU.
            let mut portable_out = vec![0u32; len + LANES];
            let nf = f32::INFINITY.key();
            let portable = portable_window(&data, window, nf, &mut portable_out, &mut portable_sum);
            assert_eq!(portable, counts);
            assert_eq!(portable_sum, sum);
            let inside: Vec<u32> = data
                .iter()
                .map(|x| x.key())
                .filter(|k| (k >> 19) >= lo_bin && (k >> 19) <= hi_bin)
                .collect();
            assert_eq!(counts.written, Some(inside.len()), "len {len}");
            assert_eq!(&out[..inside.len()], &inside[..]);
            assert_eq!(
                counts.above,
                data.iter().filter(|x| (x.key() >> 19) > hi_bin).count() as u64
            );
            assert_eq!(counts.non_finite, u64::from(len > 3));
        }
        let data = vec![0.6f32; 100];
        let window = KeyWindow::from_bins(0.5f32.key() >> 19, (0.5f32.key() >> 19) + 20, 19);
        let mut sum = ExactSum::default();
        let found = window_pass(
            &data,
            window,
            f32::INFINITY.key(),
            &mut [0u32; 50],
            &mut sum,
        );
        assert_eq!(found.written, None);
    }
}

#[cfg(test)]
mod same_sums {
    use super::tests::portable_window;
    use super::*;

    /// Every variant's sum of g^2, rounded.
    fn sums<T: GradElem>(data: &[T], shift: u32, window: KeyWindow) -> [f64; 4] {
        let nf = T::DTYPE.non_finite_key();
        let (mut hist, mut spare) = (vec![0u32; 4096], vec![0u32; 4096]);
        let mut out = vec![0u32; data.len() + 64];
        let mut sums = [ExactSum::default(); 4];
        first_digit_histogram(data, shift, &mut hist, &mut spare, &mut sums[0]);
        window_pass(data, window, nf, &mut out, &mut sums[1]);
        portable_window(data, window, nf, &mut out, &mut sums[2]);
        sum_sq_and_non_finite(data, &mut sums[3]);
        sums.map(|s| s.to_f64())
    }

    /// 16-bit types: every variant's sums, counts and copies agree (shift 3: 12 + 3 bits).
    fn same_for<T: GradElem>(data: &[T], len: usize) {
        let window =
            KeyWindow::from_bins(data[len / 2].key() >> 3, (data[len / 2].key() >> 3) + 2, 3);
        let [histogram, rest @ ..] = sums(data, 3, window);
        for other in rest {
            assert_eq!(other.to_bits(), histogram.to_bits(), "len {len}");
        }
        let (mut out, mut portable_out) = (vec![0u32; len + 64], vec![0u32; len + 64]);
        let nf = T::DTYPE.non_finite_key();
        let mut sum = ExactSum::default();
        let fast = window_pass(data, window, nf, &mut out, &mut sum);
        let portable = portable_window(data, window, nf, &mut portable_out, &mut sum);
        assert_eq!(fast, portable);
        let n = fast.written.unwrap();
        assert_eq!(&out[..n], &portable_out[..n]);
        let above = data
            .iter()
            .filter(|x| x.key() > window.lo + window.span)
            .count() as u64;
        assert_eq!(fast.above, above);
    }

    /// Every pass-1 variant and the optimizer's scan give the sum of g^2 the same bits, so that
    /// GMT that keeps everything equals the mask-off path bit for bit; and the sum of a tensor
    /// cut into pieces at leaf boundaries is the sum of the whole.
    #[test]
    fn every_variant_sums_the_same_bits() {
        for len in [1usize, 15, 16, 17, 511, 512, 513, 1000, 40001, 1 << 20] {
            let data: Vec<f32> = (0..len)
                .map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 1.3e-3)
                .collect();
            let [histogram, rest @ ..] = sums(&data, 19, KeyWindow::from_bins(100, 102, 19));
            for other in rest {
                assert_eq!(other.to_bits(), histogram.to_bits(), "len {len}");
            }
            let mut pieces = ExactSum::default();
            for piece in data.chunks(3 * SUM_LEAF_LEN) {
                let mut sum = ExactSum::default();
                sum_sq_and_non_finite(piece, &mut sum);
                pieces.merge(&sum);
            }
            assert_eq!(pieces.to_f64().to_bits(), histogram.to_bits());
            let halves: Vec<half::bf16> = data.iter().map(|&x| half::bf16::from_f32(x)).collect();
            same_for(&halves, len);
            let halves: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
            same_for(&halves, len);
        }
    }
}
