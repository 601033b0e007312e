// Sharded radix select: each rank holds a slice of every tensor (ZeRO, FSDP) and runs these
// kernels on its slices; between them the host enqueues an all-reduce (NCCL) of the per-group
// histograms on the same stream, so that every rank chooses the same buckets (src/cuda/shard.rs).
//
// The passes are select.cu's, with the last-block decision taken out of them:
//  0. gm_select_begin (select.cu), as for one rank.
//  1. gm_histogram_shard_<dtype>: pass 1 without the decision. gm_shard_gather copies each group's
//     non-finite count behind the histograms (d_tail) and its sum of g^2 to d_sums, the step's
//     totals after them. All-reduce d_hist (histograms and tail) and d_sums.
//  2. gm_shard_decide (one block per group, first = 1): puts the reduced totals back, chooses the
//     first bucket from the reduced histogram (select.cuh's descend), reserves candidates.
//  3. gm_refine_shard_<dtype> (and for the last f32 digit gm_refine_candidates_shard), all-reduce
//     the histograms, gm_shard_decide (first = 0): one digit each time.
// A bucket that holds exactly the remaining target is refined to the last digit instead of taking
// its minimum (that would need a min-reduce); the threshold is the same key. The sums of g^2 add
// in another order than one GPU's atomics (already run-dependent there), so with clipping a
// sharded step may differ from an unsharded one in the last bit of the clip factor.

#include "select.cuh"

extern "C" __global__ void gm_shard_gather(const GmGroup* d_groups, unsigned n_groups, const GmStep* d_step,
                                           unsigned long long* d_tail, double* d_sums) {
    const unsigned i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n_groups) {
        d_tail[i] = d_groups[i].non_finite;
        d_sums[i] = d_groups[i].sum_sq;
    } else if (i == n_groups) {
        d_tail[i] = d_step->non_finite;
        d_sums[i] = d_step->sum_sq;
    }
}

// One block per group (at least one block: block 0 also writes the step's totals).
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_shard_decide(GmGroup* d_groups, unsigned n_groups, unsigned long long* d_hist, GmStep* d_step,
                    const unsigned long long* d_tail, const double* d_sums, unsigned first) {
    if (first && blockIdx.x == 0 && threadIdx.x == 0) {
        d_step->non_finite = d_tail[n_groups];
        d_step->sum_sq = d_sums[n_groups];
    }
    if (blockIdx.x >= n_groups) return;
    GmGroup* d_group = &d_groups[blockIdx.x];
    if (first && threadIdx.x == 0) {
        d_group->non_finite = d_tail[blockIdx.x];
        d_group->sum_sq = d_sums[blockIdx.x];
    }
    const unsigned stage = d_group->stage, shift = d_group->shift;
    if (stage != GM_STAGE_REFINE) return;
    const unsigned width = first ? GM_FIRST_DIGIT_BITS : next_width(shift);
    descend(d_group, d_hist + (size_t)blockIdx.x * GM_FIRST_BINS, width, shift - width);
    __syncthreads();
    if (threadIdx.x != 0) return;
    if (d_group->stage == GM_STAGE_MIN) d_group->stage = GM_STAGE_REFINE;
    const unsigned digit_shift = shift - width;
    if (first && d_group->stage == GM_STAGE_REFINE && digit_shift > next_width(digit_shift))
        reserve_candidates(d_group, d_step);
}

extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_refine_candidates_shard(GmGroup* d_groups, unsigned long long* d_hist, const unsigned* d_cand) {
    candidates_pass<false>(d_groups, d_hist, d_cand);
}

// Thin per-dtype entry points.
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_histogram_shard_f32(const GmChunk* d_chunks, const unsigned long long* d_grads, GmGroup* d_groups, unsigned long long* d_hist, GmStep* d_step) {
    histogram_pass<KeyF32, false>(d_chunks, d_grads, d_groups, d_hist, d_step);
}
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_histogram_shard_bf16(const GmChunk* d_chunks, const unsigned long long* d_grads, GmGroup* d_groups, unsigned long long* d_hist, GmStep* d_step) {
    histogram_pass<KeyBF16, false>(d_chunks, d_grads, d_groups, d_hist, d_step);
}
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_histogram_shard_f16(const GmChunk* d_chunks, const unsigned long long* d_grads, GmGroup* d_groups, unsigned long long* d_hist, GmStep* d_step) {
    histogram_pass<KeyF16, false>(d_chunks, d_grads, d_groups, d_hist, d_step);
}
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS) gm_refine_shard_f32(
    const GmChunk* d_chunks, const unsigned long long* d_grads, GmGroup* d_groups, unsigned long long* d_hist, unsigned* d_cand, unsigned flags) {
    refine_pass<KeyF32, false>(d_chunks, d_grads, d_groups, d_hist, d_cand, flags);
}
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS) gm_refine_shard_bf16(
    const GmChunk* d_chunks, const unsigned long long* d_grads, GmGroup* d_groups, unsigned long long* d_hist, unsigned* d_cand, unsigned flags) {
    refine_pass<KeyBF16, false>(d_chunks, d_grads, d_groups, d_hist, d_cand, flags);
}
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS) gm_refine_shard_f16(
    const GmChunk* d_chunks, const unsigned long long* d_grads, GmGroup* d_groups, unsigned long long* d_hist, unsigned* d_cand, unsigned flags) {
    refine_pass<KeyF16, false>(d_chunks, d_grads, d_groups, d_hist, d_cand, flags);
}
