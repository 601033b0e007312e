//! The radix-select building blocks of the CPU engine: the bucket choice and the per-group
//! refinement state machine (pass 1 itself is in `pass1.rs`). The CUDA kernels follow the same steps (DESIGN.md §2).

use rayon::prelude::*;

use crate::tuning::REFINE_DIGIT_BITS;

/// Candidate sets at least this large are refined by several tasks ([`GroupState::refine_parallel`]).
pub(crate) const PARALLEL_REFINE_MIN: usize = 1 << 20;

/// Segments of a parallel refinement.
const REFINE_PARTS: usize = 16;

const REFINE_BINS: usize = 1 << REFINE_DIGIT_BITS;

/// Bin-wise sum of two histograms (the reduction of histograms built by several tasks).
pub(crate) fn add_counts<const N: usize>(mut a: [u64; N], b: [u64; N]) -> [u64; N] {
    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
    a
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

    /// The smallest key of `keys` in the bucket (the `Min` stage).
    fn bucket_min(&self, keys: &[u32]) -> Option<u32> {
        keys.iter().copied().filter(|&k| self.in_bucket(k)).min()
    }

    /// One digit (`width` bits at `digit_shift`) over `keys`: counts the digit of every key in the
    /// bucket into `hist` and moves those keys to the front; returns how many there are.
    /// Branch-free: a key outside the bucket adds 0 to some bin and is overwritten by the next one
    /// kept.
    pub(crate) fn digit_pass(
        &self,
        keys: &mut [u32],
        width: u32,
        digit_shift: u32,
        hist: &mut [u64],
    ) -> usize {
        let mut kept = 0;
        for i in 0..keys.len() {
            let key = keys[i];
            let inside = self.in_bucket(key);
            hist[((key >> digit_shift) & ((1 << width) - 1)) as usize] += u64::from(inside);
            keys[kept] = key;
            kept += usize::from(inside);
        }
        kept
    }

    /// Runs the remaining passes over `keys`, a superset of the bucket, until the group is done.
    /// The candidates are compacted in place to the bucket after each digit.
    pub fn refine_slice(&mut self, keys: &mut [u32], hist: &mut [u64]) {
        let mut len = keys.len();
        loop {
            match self.stage {
                Stage::Done => return,
                Stage::Min => {
                    let min = self.bucket_min(&keys[..len]);
                    self.finish(min.expect("bucket is not empty"), self.target);
                }
                Stage::Refine => {
                    let (width, digit_shift) = self.next_digit();
                    let hist = &mut hist[..1 << width];
                    hist.fill(0);
                    len = self.digit_pass(&mut keys[..len], width, digit_shift, hist);
                    self.descend(hist, digit_shift);
                }
            }
        }
    }

    /// [`GroupState::refine_slice`] for a large candidate set: the keys are cut into
    /// `REFINE_PARTS` (16) segments; for each digit every segment runs the digit pass on its own
    /// task, and the histograms are added up. Same answer, no allocation.
    pub(crate) fn refine_parallel(&mut self, keys: &mut [u32]) {
        let segment = keys.len().div_ceil(REFINE_PARTS).max(1);
        let mut lens = [0usize; REFINE_PARTS];
        for (len, part) in lens.iter_mut().zip(keys.chunks(segment)) {
            *len = part.len();
        }
        loop {
            let state = *self;
            match self.stage {
                Stage::Done => return,
                Stage::Min => {
                    let min = keys
                        .par_chunks(segment)
                        .zip(&lens)
                        .filter_map(|(part, &len)| state.bucket_min(&part[..len]))
                        .min();
                    self.finish(min.expect("bucket is not empty"), self.target);
                }
                Stage::Refine => {
                    let (width, digit_shift) = self.next_digit();
                    let hist = keys
                        .par_chunks_mut(segment)
                        .zip(&mut lens)
                        .map(|(part, len)| {
                            let mut hist = [0u64; REFINE_BINS];
                            *len =
                                state.digit_pass(&mut part[..*len], width, digit_shift, &mut hist);
                            hist
                        })
                        .reduce(|| [0u64; REFINE_BINS], add_counts);
                    self.descend(&hist[..1 << width], digit_shift);
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
        hist: &mut [u64],
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

    /// A group's state after a first digit that put every key of `keys` in its bucket.
    fn all_in_bucket(keys: &[u32], target: u64) -> GroupState {
        GroupState {
            stage: Stage::Refine,
            target,
            bucket: keys.len() as u64,
            shift: 31,
            ..GroupState::default()
        }
    }

    #[test]
    fn parallel_refinement_matches_the_serial_one_and_a_sort() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let n = 3 * PARALLEL_REFINE_MIN / 2 + 7; // odd, not a multiple of the segment count
                                                 // Wide keys; keys sharing their top bits (many ties); a handful of distinct values.
        for modulus in [1u64 << 31, 1 << 12, 5] {
            let keys: Vec<u32> = (0..n)
                .map(|_| (next() % modulus) as u32 | 0x4000_0000)
                .collect();
            let mut sorted = keys.clone();
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            for target in [1, 2, n as u64 / 3, n as u64 - 1, n as u64] {
                let threshold = sorted[target as usize - 1];
                let kept = sorted.iter().filter(|&&k| k >= threshold).count() as u64;
                let mut serial = all_in_bucket(&keys, target);
                serial.refine_slice(&mut keys.clone(), &mut [0u64; REFINE_BINS]);
                let mut parallel = all_in_bucket(&keys, target);
                parallel.refine_parallel(&mut keys.clone());
                let what = format!("modulus {modulus}, target {target}");
                assert_eq!(
                    (serial.threshold_key, serial.kept),
                    (threshold, kept),
                    "{what}"
                );
                assert_eq!(
                    (parallel.threshold_key, parallel.kept),
                    (threshold, kept),
                    "{what}"
                );
            }
        }
    }

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
}
