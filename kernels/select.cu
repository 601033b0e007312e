// Exact per-group |g| threshold by radix select: every tensor of the model in one launch per pass.
//
// The algorithm (DESIGN.md §2; the CPU engine in src/cpu/select.rs takes the same steps):
//  0. gm_select_begin: per group, target = len - floor(r * len). Groups that need no selection
//     (r = 0: keep all; target = 0: keep none) are done at once. Resets the step totals.
//  1. gm_histogram_<dtype> (pass 1, one block per work-list chunk): reads every gradient once with
//     16-byte loads. Builds a shared-memory histogram of the key's top 12 bits, the sum of g^2 and
//     the non-finite count, then flushes the non-zero bins to the group's global histogram with
//     atomics. The last block to finish a group (a ticket taken after a threadfence) scans that
//     histogram from the top, chooses the bucket holding the target-th largest key, and reserves a
//     range of the candidate buffer for the bucket when two or more digits remain. No host round
//     trip, no grid-wide barrier.
//  2. gm_refine_<dtype> (one block per chunk, re-reads g): for groups still refining, histograms the
//     next digit of the keys in the bucket and copies them to the group's candidate range when it
//     has one. A group whose bucket holds exactly the remaining target (early exit) takes the
//     bucket's minimum instead. The last block of each group descends one digit.
//  3. f32 only: gm_refine_candidates (GM_CANDIDATE_BLOCKS blocks per group stride over its compacted
//     keys) resolves the last digit; gm_refine_<dtype> runs once more, for the groups that found no
//     room in the candidate buffer.
// f32 keys (31 bits) are exact after 3 passes, of which 2 read the gradients; bf16/f16 keys
// (15 bits) after 2. Thresholds stay on the device in GmGroup; the host copies that array back
// asynchronously when it wants the stats.
//
// The bucket-then-refine scheme follows radix select as in RAFT's select_k (Zhang et al., "Parallel
// Top-K Algorithms on GPU: A Comprehensive Study and New Methods", SC'23); the last-block pattern is
// the CUDA threadfence reduction. The code is our own.

#include "select.cuh"

extern "C" __global__ void gm_select_begin(GmGroup* d_groups, unsigned n_groups, GmStep* d_step, double mask_ratio,
                                           unsigned key_bits) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i == 0) {
        d_step->sum_sq = 0.0;
        d_step->non_finite = 0;
        d_step->cand_used = 0;
    }
    if (i >= n_groups) return;
    GmGroup& group = d_groups[i];
    const unsigned long long masked = (unsigned long long)floor(__dmul_rn(mask_ratio, __ull2double_rn(group.len)));
    group.target = group.len - (masked < group.len ? masked : group.len);
    group.above = group.bucket = group.kept = group.non_finite = 0;
    group.cand_start = group.cand_count = 0;
    group.sum_sq = 0.0;
    group.arrived = group.prefix = group.has_candidates = 0;
    group.shift = key_bits;
    group.min_key = 0xffffffffu;
    group.threshold_key = 0;
    if (group.target == 0) {
        group.stage = GM_STAGE_DONE;
        group.threshold_key = GM_KEEP_NONE;
    } else if (mask_ratio == 0.0) {
        group.stage = GM_STAGE_DONE;
        group.kept = group.len;
    } else {
        group.stage = GM_STAGE_REFINE;
    }
}

extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_refine_candidates(GmGroup* d_groups, unsigned long long* d_hist, const unsigned* d_cand) {
    candidates_pass(d_groups, d_hist, d_cand);
}

// Thin per-dtype entry points.
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_histogram_f32(const GmChunk* d_chunks, const unsigned long long* d_grads, GmGroup* d_groups, unsigned long long* d_hist, GmStep* d_step) {
    histogram_pass<KeyF32>(d_chunks, d_grads, d_groups, d_hist, d_step);
}
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_histogram_bf16(const GmChunk* d_chunks, const unsigned long long* d_grads, GmGroup* d_groups, unsigned long long* d_hist, GmStep* d_step) {
    histogram_pass<KeyBF16>(d_chunks, d_grads, d_groups, d_hist, d_step);
}
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_histogram_f16(const GmChunk* d_chunks, const unsigned long long* d_grads, GmGroup* d_groups, unsigned long long* d_hist, GmStep* d_step) {
    histogram_pass<KeyF16>(d_chunks, d_grads, d_groups, d_hist, d_step);
}
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_refine_f32(const GmChunk* d_chunks, const unsigned long long* d_grads, GmGroup* d_groups, unsigned long long* d_hist, unsigned* d_cand, unsigned flags) {
    refine_pass<KeyF32>(d_chunks, d_grads, d_groups, d_hist, d_cand, flags);
}
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_refine_bf16(const GmChunk* d_chunks, const unsigned long long* d_grads, GmGroup* d_groups, unsigned long long* d_hist, unsigned* d_cand, unsigned flags) {
    refine_pass<KeyBF16>(d_chunks, d_grads, d_groups, d_hist, d_cand, flags);
}
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_refine_f16(const GmChunk* d_chunks, const unsigned long long* d_grads, GmGroup* d_groups, unsigned long long* d_hist, unsigned* d_cand, unsigned flags) {
    refine_pass<KeyF16>(d_chunks, d_grads, d_groups, d_hist, d_cand, flags);
}
