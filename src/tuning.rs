//! Launch and radix constants, mirrored from `kernels/tuning.cuh` (a test checks they agree).
//! Tuning means editing that header and this file together.

/// Bits of the first radix digit (pass 1 histograms `1 << FIRST_DIGIT_BITS` bins).
pub const FIRST_DIGIT_BITS: u32 = 12;
/// Bits of each refinement digit (the last one may be narrower).
pub const REFINE_DIGIT_BITS: u32 = 11;
/// Entries per GPU work-list chunk; a chunk never spans two tensors.
pub const GPU_CHUNK_LEN: usize = 65536;
/// Threads per block of the selection kernels.
pub const BLOCK_THREADS: u32 = 256;
/// Bytes per vector load in the kernels.
pub const VEC_BYTES: usize = 16;

/// Blocks per group that stride over the group's compacted candidates in the last f32 digit.
pub const CANDIDATE_BLOCKS: u32 = 128;
/// Candidate keys a block stages in shared memory before one global reservation (pass 2, f32).
pub const BLOCK_CANDIDATES: u32 = 2048;

/// The most keys the CUDA candidate buffer may hold. `gm_refine_candidates` strides a group's
/// candidates over `CANDIDATE_BLOCKS` blocks of `BLOCK_THREADS` threads, and each block counts its
/// share (at most `BLOCK_THREADS * ceil(count / (CANDIDATE_BLOCKS * BLOCK_THREADS))` keys) in a u32
/// shared-memory histogram; up to this many candidates every share fits (about 2^39 keys, 2 TiB:
/// more than any device holds).
pub const MAX_CUDA_CANDIDATES: u64 =
    (u32::MAX as u64 / BLOCK_THREADS as u64) * BLOCK_THREADS as u64 * CANDIDATE_BLOCKS as u64;

/// Entries per CPU work chunk (one rayon task, one private histogram). Large enough that the
/// per-chunk histograms (16 KiB each) are small next to the data, small enough to balance 2-64 cores.
pub const CPU_CHUNK_LEN: usize = 1 << 20;

/// Entries per leaf of the canonical sum of g^2 (`cpu::exact_sum`): a tensor's leaves start at
/// multiples of this in its own index; each is summed in f64 lanes, and the leaves exactly. A
/// multiple of 16 (the lanes) that divides `CPU_CHUNK_LEN`, so whole chunks hold whole leaves.
pub const SUM_LEAF_LEN: usize = 512;

const _: () = assert!(CPU_CHUNK_LEN.is_multiple_of(SUM_LEAF_LEN));

// Counts local to one CPU chunk (its first-digit histogram, the window pass's lanes, the optimizer's
// kept count and scan) are u32 so that their loops stay in 32-bit lanes; every count that can reach
// a group's length (merged histograms, refinement histograms, kept, target) is u64.
const _: () = assert!(CPU_CHUNK_LEN <= u32::MAX as usize);

/// Number of first-digit bins.
pub const FIRST_DIGIT_BINS: usize = 1 << FIRST_DIGIT_BITS;

/// The radix digits of a key of `key_bits` bits, from the top: (shift, width) pairs.
/// f32 (31 bits): (19, 12), (8, 11), (0, 8). bf16/f16 (15 bits): (3, 12), (0, 3).
pub fn digits(key_bits: u32) -> impl Iterator<Item = (u32, u32)> {
    let mut remaining = key_bits;
    let mut first = true;
    std::iter::from_fn(move || {
        if remaining == 0 {
            return None;
        }
        let width = if first {
            FIRST_DIGIT_BITS
        } else {
            REFINE_DIGIT_BITS
        }
        .min(remaining);
        first = false;
        remaining -= width;
        Some((remaining, width))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_value(name: &str) -> u64 {
        let header = include_str!("../kernels/tuning.cuh");
        let line = header
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("{name} missing from kernels/tuning.cuh"));
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    }

    #[test]
    fn header_and_module_agree() {
        assert_eq!(
            header_value("GM_FIRST_DIGIT_BITS"),
            u64::from(FIRST_DIGIT_BITS)
        );
        assert_eq!(
            header_value("GM_REFINE_DIGIT_BITS"),
            u64::from(REFINE_DIGIT_BITS)
        );
        assert_eq!(header_value("GM_CHUNK_LEN"), GPU_CHUNK_LEN as u64);
        assert_eq!(header_value("GM_BLOCK_THREADS"), u64::from(BLOCK_THREADS));
        assert_eq!(header_value("GM_VEC_BYTES"), VEC_BYTES as u64);
        assert_eq!(
            header_value("GM_CANDIDATE_BLOCKS"),
            u64::from(CANDIDATE_BLOCKS)
        );
    }

    /// The largest share of `count` candidates one block of `gm_refine_candidates` counts.
    fn block_share(count: u64) -> u64 {
        let stride = u64::from(CANDIDATE_BLOCKS) * u64::from(BLOCK_THREADS);
        u64::from(BLOCK_THREADS) * count.div_ceil(stride)
    }

    #[test]
    fn cuda_candidate_shares_fit_u32_up_to_the_limit() {
        assert!(block_share(MAX_CUDA_CANDIDATES) <= u64::from(u32::MAX));
        assert!(block_share(MAX_CUDA_CANDIDATES + 1) > u64::from(u32::MAX)); // the limit is tight
    }

    #[test]
    fn digit_schedules() {
        assert_eq!(
            digits(31).collect::<Vec<_>>(),
            vec![(19, 12), (8, 11), (0, 8)]
        );
        assert_eq!(digits(15).collect::<Vec<_>>(), vec![(3, 12), (0, 3)]);
    }
}
