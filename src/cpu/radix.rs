//! The radix-select building blocks of the CPU engine: the pass-1 histogram, the bucket choice and
//! the per-group refinement state machine. The CUDA kernels follow the same steps (DESIGN.md §2).

use crate::tuning::REFINE_DIGIT_BITS;
use crate::GradElem;

/// Entries per block of the pass-1 loop: keys are computed for a block with vector code, then
/// histogrammed (and copied out when speculating) from L1.
const BLOCK: usize = 512;

/// A window of first-digit bins `[lo, lo + span]` whose keys pass 1 copies to `out`: a guess of
/// where the group's bucket will be, so that a hit needs no second read of the gradients.
pub struct Window<'a> {
    pub lo: u32,
    pub span: u32,
    pub out: &'a mut [u32],
}

/// Builds the first-digit histogram of `data` into `hist` (added to, not cleared) and returns the
/// sum of g^2 and, with a window, how many keys were copied out (None when `out` filled up).
/// `shift` is the first digit's shift for `T`.
///
/// Two interleaved sub-histograms break the store-to-load dependency when consecutive entries fall
/// in the same bin, which is the common case for gradients.
pub fn first_digit_histogram<T: GradElem>(
    data: &[T],
    shift: u32,
    hist: &mut [u32],
    spare: &mut [u32],
    mut window: Option<Window<'_>>,
) -> (f64, Option<usize>) {
    let mask = hist.len() - 1;
    debug_assert!(hist.len().is_power_of_two() && spare.len() == hist.len());
    spare.fill(0);
    let mut lanes = [0.0f64; 8];
    let mut keys = [0u32; BLOCK];
    let mut written = Some(0usize);
    for block in data.chunks(BLOCK) {
        let keys = &mut keys[..block.len()];
        for (key, x) in keys.iter_mut().zip(block) {
            *key = x.key();
        }
        let mut eights = block.chunks_exact(8);
        for eight in &mut eights {
            for (lane, x) in lanes.iter_mut().zip(eight) {
                let f = f64::from(x.to_f32());
                *lane += f * f;
            }
        }
        for x in eights.remainder() {
            let f = f64::from(x.to_f32());
            lanes[0] += f * f;
        }
        let mut pairs = keys.chunks_exact(2);
        for pair in &mut pairs {
            hist[(pair[0] >> shift) as usize & mask] += 1;
            spare[(pair[1] >> shift) as usize & mask] += 1;
        }
        for &key in pairs.remainder() {
            hist[(key >> shift) as usize & mask] += 1;
        }
        if let (Some(window), Some(at)) = (window.as_mut(), written) {
            written = copy_window(keys, shift, window, at);
        }
    }
    for (h, s) in hist.iter_mut().zip(spare.iter()) {
        *h += *s;
    }
    let sum_sq = lanes.chunks(2).map(|pair| pair[0] + pair[1]).sum();
    (sum_sq, window.and(written))
}

/// Appends the keys of `keys` whose first digit is in the window to `window.out[at..]`, without
/// branches; None when the block might not fit.
fn copy_window(keys: &[u32], shift: u32, window: &mut Window<'_>, at: usize) -> Option<usize> {
    let out = window.out.get_mut(at..at + keys.len())?;
    let mut n = 0;
    for &key in keys {
        out[n] = key;
        n += usize::from((key >> shift).wrapping_sub(window.lo) <= window.span);
    }
    Some(at + n)
}

/// Index of the bin holding the `target`-th largest entry of `hist` (scanning from the top bin),
/// and the count of entries in bins above it. `target` must be in 1..=sum(hist).
pub fn choose_bin<C: Copy + Into<u64>>(hist: &[C], target: u64) -> (usize, u64) {
    let mut above = 0u64;
    for bin in (0..hist.len()).rev() {
        let count: u64 = hist[bin].into();
        if above + count >= target {
            return (bin, above);
        }
        above += count;
    }
    unreachable!("choose_bin: target {target} exceeds the histogram's total {above}")
}

/// Where a group's selection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Stage {
    /// Threshold and kept count are final.
    #[default]
    Done,
    /// The next digit must be histogrammed over the keys matching `prefix`.
    Refine,
    /// The bucket holds exactly the remaining target: the threshold is its smallest key.
    Min,
}

/// A group's radix-select state between passes.
#[derive(Debug, Clone, Copy, Default)]
pub struct GroupState {
    pub stage: Stage,
    /// The entries that must be kept.
    pub target: u64,
    /// Entries strictly above the current bucket.
    pub above: u64,
    /// Entries in the current bucket.
    pub bucket: u64,
    /// The digits chosen so far: keys with `key >> shift == prefix` are in the bucket.
    pub prefix: u32,
    pub shift: u32,
    /// The final threshold key and kept count, once `stage == Done`.
    pub threshold_key: u32,
    pub kept: u64,
    /// Range of this group's compacted candidates, when it has them.
    pub cand_start: usize,
    pub cand_len: usize,
    pub has_candidates: bool,
    /// The candidates are pass 1's window copy (not pass 2's compaction).
    pub in_window: bool,
}

impl GroupState {
    /// Whether `key` is in the current bucket.
    #[inline(always)]
    pub fn in_bucket(&self, key: u32) -> bool {
        (key >> self.shift) == self.prefix
    }

    /// Width and shift of the next digit (only meaningful in `Stage::Refine`).
    pub fn next_digit(&self) -> (u32, u32) {
        let width = REFINE_DIGIT_BITS.min(self.shift);
        (width, self.shift - width)
    }

    /// Takes the bucket `bin` of a digit at `digit_shift` whose histogram is `hist`.
    pub fn descend<C: Copy + Into<u64>>(&mut self, hist: &[C], digit_shift: u32) {
        let (bin, above) = choose_bin(hist, self.target - self.above);
        let width = self.shift - digit_shift;
        self.above += above;
        self.bucket = hist[bin].into();
        self.prefix = (self.prefix << width) | bin as u32;
        self.shift = digit_shift;
        if self.shift == 0 {
            self.finish(self.prefix, self.above + self.bucket);
        } else if self.bucket == self.target - self.above {
            self.stage = Stage::Min;
        } else {
            self.stage = Stage::Refine;
        }
    }

    /// Records the final answer.
    pub fn finish(&mut self, threshold_key: u32, kept: u64) {
        self.threshold_key = threshold_key;
        self.kept = kept;
        self.stage = Stage::Done;
    }

    /// Runs the remaining passes over `keys`, a superset of the bucket, until the group is done.
    /// With `narrow`, the candidates are compacted in place to the bucket after each digit.
    pub fn refine_slice(&mut self, keys: &mut [u32], hist: &mut [u32]) {
        let mut len = keys.len();
        loop {
            match self.stage {
                Stage::Done => return,
                Stage::Min => {
                    let min = keys[..len]
                        .iter()
                        .copied()
                        .filter(|&k| self.in_bucket(k))
                        .min();
                    self.finish(min.expect("bucket is not empty"), self.target);
                }
                Stage::Refine => {
                    let (width, digit_shift) = self.next_digit();
                    let hist = &mut hist[..1 << width];
                    hist.fill(0);
                    let mut kept_len = 0;
                    for i in 0..len {
                        let key = keys[i];
                        if self.in_bucket(key) {
                            hist[((key >> digit_shift) & ((1 << width) - 1)) as usize] += 1;
                            keys[kept_len] = key;
                            kept_len += 1;
                        }
                    }
                    len = kept_len;
                    self.descend(hist, digit_shift);
                }
            }
        }
    }

    /// Runs the remaining passes by re-reading the group's gradients: `for_each_key` must call its
    /// argument once for every key of the group. Used when the bucket did not fit the candidate
    /// buffer.
    pub fn refine_stream(
        &mut self,
        mut for_each_key: impl FnMut(&mut dyn FnMut(u32)),
        hist: &mut [u32],
    ) {
        loop {
            match self.stage {
                Stage::Done => return,
                Stage::Min => {
                    let mut min = u32::MAX;
                    let state = *self;
                    for_each_key(&mut |key| {
                        if state.in_bucket(key) {
                            min = min.min(key);
                        }
                    });
                    self.finish(min, self.target);
                }
                Stage::Refine => {
                    let (width, digit_shift) = self.next_digit();
                    let hist = &mut hist[..1 << width];
                    hist.fill(0);
                    let state = *self;
                    for_each_key(&mut |key| {
                        if state.in_bucket(key) {
                            hist[((key >> digit_shift) & ((1 << width) - 1)) as usize] += 1;
                        }
                    });
                    self.descend(hist, digit_shift);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choose_bin_scans_from_the_top() {
        let hist = [5u32, 0, 3, 2];
        assert_eq!(choose_bin(&hist, 1), (3, 0));
        assert_eq!(choose_bin(&hist, 2), (3, 0));
        assert_eq!(choose_bin(&hist, 3), (2, 2));
        assert_eq!(choose_bin(&hist, 5), (2, 2));
        assert_eq!(choose_bin(&hist, 6), (0, 5));
        assert_eq!(choose_bin(&hist, 10), (0, 5));
    }

    #[test]
    fn histogram_counts_every_entry_once() {
        let data: Vec<f32> = (0..1001).map(|i| (i as f32 - 500.0) * 0.37).collect();
        let mut hist = vec![0u32; 4096];
        let mut spare = vec![0u32; 4096];
        let (sum_sq, _) = first_digit_histogram(&data, 19, &mut hist, &mut spare, None);
        assert_eq!(hist.iter().map(|&c| c as usize).sum::<usize>(), data.len());
        let exact: f64 = data.iter().map(|&x| (x as f64) * (x as f64)).sum();
        assert!((sum_sq - exact).abs() <= 1e-12 * exact);
        for &x in &data {
            assert!(hist[(x.key() >> 19) as usize] > 0);
        }
    }

    #[test]
    fn the_window_copies_exactly_its_bins() {
        let data: Vec<f32> = (0..3001).map(|i| (i as f32 - 1500.0) * 0.01).collect();
        let (mut hist, mut spare) = (vec![0u32; 4096], vec![0u32; 4096]);
        let mut out = vec![0u32; 3001];
        let lo = 0.5f32.key() >> 19;
        let window = Window {
            lo,
            span: 20,
            out: &mut out,
        };
        let (_, written) = first_digit_histogram(&data, 19, &mut hist, &mut spare, Some(window));
        let want: Vec<u32> = data
            .iter()
            .map(|x| x.key())
            .filter(|k| (k >> 19) >= lo && (k >> 19) <= lo + 20)
            .collect();
        assert_eq!(written, Some(want.len()));
        assert_eq!(&out[..want.len()], &want[..]);
        let mut small = vec![0u32; 100];
        let window = Window {
            lo,
            span: 20,
            out: &mut small,
        };
        hist.fill(0);
        assert_eq!(
            first_digit_histogram(&data, 19, &mut hist, &mut spare, Some(window)).1,
            None
        );
    }
}
