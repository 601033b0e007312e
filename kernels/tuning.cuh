// gradmask launch and radix constants: the one file to edit when tuning.
// Mirrored by src/tuning.rs; a unit test there checks that both files agree.
#pragma once

// Radix digits of the |g| key. Pass 1 histograms the top FIRST_DIGIT_BITS of the key (4096 bins);
// each refinement pass histograms the next REFINE_DIGIT_BITS (or fewer for the last digit).
// f32 keys (31 bits): 12 + 11 + 8. bf16/f16 keys (15 bits): 12 + 3.
#define GM_FIRST_DIGIT_BITS 12
#define GM_REFINE_DIGIT_BITS 11

// Entries per work-list chunk: one block walks one chunk; a chunk never spans two tensors.
#define GM_CHUNK_LEN 65536

// Threads per block of the histogram and refinement kernels.
#define GM_BLOCK_THREADS 256

// Bytes per vector load (16: uint4).
#define GM_VEC_BYTES 16

// Blocks per group that stride over the group's compacted candidates in the last f32 digit.
#define GM_CANDIDATE_BLOCKS 128

// Candidate keys a block stages in shared memory before one global reservation (pass 2, f32).
#define GM_BLOCK_CANDIDATES 2048
