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

#include "gm_common.cuh"

#define GM_FIRST_BINS (1u << GM_FIRST_DIGIT_BITS)
#define GM_REFINE_COMPACT 1u     // refine flag: copy the bucket's keys to the candidate buffer
#define GM_REFINE_SKIP_CANDS 2u  // refine flag: leave groups that have candidates to the candidate kernel

// Adds one to s_hist[bin]. When the whole coalesced warp hits one bin (zeros, repeated values), a
// single lane adds the count.
__device__ __forceinline__ void hist_add(unsigned* s_hist, unsigned bin) {
    cg::coalesced_group active = cg::coalesced_threads();
    const unsigned first = active.shfl(bin, 0);
    if (active.all(bin == first)) {
        if (active.thread_rank() == 0) atomicAdd(&s_hist[bin], active.size());
    } else {
        atomicAdd(&s_hist[bin], 1u);
    }
}

// Appends key to the group's candidate range in global memory; one atomic per coalesced warp.
// Writes never pass the range reserved for the bucket (d_group->bucket keys), even if the
// gradients changed under the selection.
__device__ __forceinline__ void append_candidate(GmGroup* d_group, unsigned* d_cand, unsigned key) {
    cg::coalesced_group active = cg::coalesced_threads();
    unsigned long long base = 0;
    if (active.thread_rank() == 0) base = atomicAdd(&d_group->cand_count, (unsigned long long)active.size());
    base = active.shfl(base, 0) + active.thread_rank();
    if (base < d_group->bucket) d_cand[d_group->cand_start + base] = key;
}

// Stages key in the block's shared candidate list (one shared atomic per coalesced warp); when
// that is full, appends to global memory directly.
__device__ __forceinline__ void stage_candidate(unsigned* s_cand, unsigned* s_count, GmGroup* d_group, unsigned* d_cand,
                                                unsigned key) {
    cg::coalesced_group active = cg::coalesced_threads();
    unsigned base = 0;
    if (active.thread_rank() == 0) base = atomicAdd(s_count, active.size());
    const unsigned slot = active.shfl(base, 0) + active.thread_rank();
    if (slot < GM_BLOCK_CANDIDATES) {
        s_cand[slot] = key;
    } else {
        append_candidate(d_group, d_cand, key);
    }
}

// Copies the block's staged candidates to the group's range with one global atomic per block.
__device__ void flush_candidates(const unsigned* s_cand, const unsigned* s_count, GmGroup* d_group, unsigned* d_cand) {
    __shared__ unsigned long long s_base;
    __syncthreads();
    const unsigned n = *s_count < GM_BLOCK_CANDIDATES ? *s_count : GM_BLOCK_CANDIDATES;
    if (threadIdx.x == 0) s_base = atomicAdd(&d_group->cand_count, (unsigned long long)n);
    __syncthreads();
    for (unsigned i = threadIdx.x; i < n; i += GM_BLOCK_THREADS)
        if (s_base + i < d_group->bucket) d_cand[d_group->cand_start + s_base + i] = s_cand[i];
}

// Takes this block's ticket for the group; true in every thread of the last block to arrive.
__device__ __forceinline__ bool arrive_last(GmGroup* d_group, unsigned expected) {
    __shared__ bool s_last;
    __threadfence();  // this block's histogram and candidate writes before its ticket
    __syncthreads();
    if (threadIdx.x == 0) s_last = atomicAdd(&d_group->arrived, 1u) == expected - 1;
    __syncthreads();
    if (s_last) __threadfence();  // every other block's writes before the reads below
    return s_last;
}

// Run by the whole last block: chooses the bucket of the next `width`-bit digit (shifted by
// digit_shift) from the group's global histogram, zeroes the histogram for the next pass, and
// advances the group's state exactly like GroupState::descend on the CPU.
__device__ void descend(GmGroup* d_group, unsigned long long* d_hist, unsigned width, unsigned digit_shift) {
    __shared__ unsigned s_bin;
    __shared__ unsigned long long s_above, s_count;
    const unsigned bins = 1u << width;
    if (threadIdx.x == 0) s_bin = 0, s_above = 0, s_count = 0;  // defined even on inconsistent input
    const unsigned per_thread = (bins + GM_BLOCK_THREADS - 1) / GM_BLOCK_THREADS;
    const unsigned long long want = d_group->target - d_group->above;
    // Thread t owns the bins [bins-1 - t*per_thread, ...] counting down from the top.
    unsigned long long mine = 0;
    for (unsigned i = threadIdx.x * per_thread; i < (threadIdx.x + 1) * per_thread && i < bins; ++i)
        mine += __ldcg(&d_hist[bins - 1 - i]);
    const unsigned long long before = block_exclusive_scan(mine);
    if (before < want && want <= before + mine) {
        unsigned long long above = before;
        for (unsigned i = threadIdx.x * per_thread; i < (threadIdx.x + 1) * per_thread && i < bins; ++i) {
            const unsigned long long count = __ldcg(&d_hist[bins - 1 - i]);
            if (above + count >= want) {
                s_bin = bins - 1 - i;
                s_above = above;
                s_count = count;
                break;
            }
            above += count;
        }
    }
    __syncthreads();
    for (unsigned b = threadIdx.x; b < bins; b += GM_BLOCK_THREADS) d_hist[b] = 0;
    if (threadIdx.x == 0) {
        d_group->above += s_above;
        d_group->bucket = s_count;
        d_group->prefix = (d_group->prefix << width) | s_bin;
        d_group->shift = digit_shift;
        d_group->arrived = 0;
        if (digit_shift == 0) {
            d_group->threshold_key = d_group->prefix;
            d_group->kept = d_group->above + s_count;
            d_group->stage = GM_STAGE_DONE;
        } else if (s_count == d_group->target - d_group->above) {
            d_group->min_key = 0xffffffffu;
            d_group->stage = GM_STAGE_MIN;
        } else {
            d_group->stage = GM_STAGE_REFINE;
        }
    }
}

// Reserves `need` candidate slots for the group when they fit (thread 0 of the last block).
__device__ void reserve_candidates(GmGroup* d_group, GmStep* d_step) {
    const unsigned long long need = d_group->bucket;
    unsigned long long used = atomicAdd(&d_step->cand_used, 0ull);
    while (used + need <= d_step->cand_cap) {
        const unsigned long long prev = atomicCAS(&d_step->cand_used, used, used + need);
        if (prev == used) {
            d_group->cand_start = used;
            d_group->cand_count = 0;
            d_group->has_candidates = 1;
            return;
        }
        used = prev;
    }
}

// Width of the next refinement digit of a group at `shift`.
__device__ __forceinline__ unsigned next_width(unsigned shift) {
    return shift < GM_REFINE_DIGIT_BITS ? shift : GM_REFINE_DIGIT_BITS;
}

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

template <class K>
__device__ void histogram_pass(const GmChunk* d_chunks, GmGroup* d_groups, unsigned long long* d_hist, GmStep* d_step) {
    __shared__ unsigned s_hist[GM_FIRST_BINS];
    constexpr unsigned shift = K::KEY_BITS - GM_FIRST_DIGIT_BITS;
    const GmChunk chunk = d_chunks[blockIdx.x];
    GmGroup* d_group = &d_groups[chunk.group];
    const bool select = !chunk.dense && d_group->stage != GM_STAGE_DONE;
    if (select)
        for (unsigned b = threadIdx.x; b < GM_FIRST_BINS; b += GM_BLOCK_THREADS) s_hist[b] = 0;
    __syncthreads();
    double sum_sq = 0.0;
    unsigned non_finite = 0;
    for_each_raw<K>(chunk, [&](typename K::Raw raw) {
        const unsigned key = K::key(raw);
        const double x = K::value(raw);
        sum_sq = fma(x, x, sum_sq);
        non_finite += key >= K::NON_FINITE;
        if (select) hist_add(s_hist, key >> shift);
    });
    const double block_sum = block_reduce(sum_sq, 0.0, OpAdd());
    const unsigned long long block_non_finite = block_reduce((unsigned long long)non_finite, 0ull, OpAdd());
    if (threadIdx.x == 0) {
        atomicAdd(&d_step->sum_sq, block_sum);
        if (block_non_finite) atomicAdd(&d_step->non_finite, block_non_finite);
        if (!chunk.dense) {
            atomicAdd(&d_group->sum_sq, block_sum);
            if (block_non_finite) atomicAdd(&d_group->non_finite, block_non_finite);
        }
    }
    if (!select) return;
    __syncthreads();
    unsigned long long* d_group_hist = d_hist + (size_t)chunk.group * GM_FIRST_BINS;
    for (unsigned b = threadIdx.x; b < GM_FIRST_BINS; b += GM_BLOCK_THREADS)
        if (s_hist[b]) atomicAdd(&d_group_hist[b], (unsigned long long)s_hist[b]);
    if (!arrive_last(d_group, d_group->n_chunks)) return;
    descend(d_group, d_group_hist, GM_FIRST_DIGIT_BITS, shift);
    __syncthreads();
    if (threadIdx.x == 0 && d_group->stage == GM_STAGE_REFINE && shift > next_width(shift))
        reserve_candidates(d_group, d_step);
}

// One refinement digit over keys produced by `walk` (a chunk of g, or a candidate range).
// Every block of the group must call it with the same flags; `expected` blocks arrive.
template <class Walk>
__device__ void refine_digit(GmGroup* d_group, unsigned long long* d_group_hist, unsigned* d_cand, bool compact,
                             unsigned expected, Walk walk) {
    __shared__ unsigned s_hist[1u << GM_REFINE_DIGIT_BITS];
    __shared__ unsigned s_cand[GM_BLOCK_CANDIDATES];
    __shared__ unsigned s_cand_count;
    const unsigned stage = d_group->stage, prefix = d_group->prefix, shift = d_group->shift;
    const unsigned width = next_width(shift), digit_shift = shift - width, digit_mask = (1u << width) - 1;
    const bool min_stage = stage == GM_STAGE_MIN;
    compact = compact && d_group->has_candidates;
    for (unsigned b = threadIdx.x; b < (1u << width); b += GM_BLOCK_THREADS) s_hist[b] = 0;
    if (threadIdx.x == 0) s_cand_count = 0;
    __syncthreads();
    unsigned min_key = 0xffffffffu;
    walk([&](unsigned key) {
        if ((key >> shift) != prefix) return;
        if (min_stage) {
            min_key = key < min_key ? key : min_key;
            return;
        }
        hist_add(s_hist, (key >> digit_shift) & digit_mask);
        if (compact) stage_candidate(s_cand, &s_cand_count, d_group, d_cand, key);
    });
    if (compact) flush_candidates(s_cand, &s_cand_count, d_group, d_cand);
    if (min_stage) {
        const unsigned block_min = block_reduce(min_key, 0xffffffffu, OpMin());
        if (threadIdx.x == 0 && block_min != 0xffffffffu) atomicMin(&d_group->min_key, block_min);
    } else {
        __syncthreads();
        for (unsigned b = threadIdx.x; b < (1u << width); b += GM_BLOCK_THREADS)
            if (s_hist[b]) atomicAdd(&d_group_hist[b], (unsigned long long)s_hist[b]);
    }
    if (!arrive_last(d_group, expected)) return;
    if (min_stage) {
        if (threadIdx.x == 0) {
            d_group->threshold_key = atomicAdd(&d_group->min_key, 0u);
            d_group->kept = d_group->target;
            d_group->arrived = 0;
            d_group->stage = GM_STAGE_DONE;
        }
        return;
    }
    descend(d_group, d_group_hist, width, digit_shift);
}

template <class K>
__device__ void refine_pass(const GmChunk* d_chunks, GmGroup* d_groups, unsigned long long* d_hist, unsigned* d_cand,
                            unsigned flags) {
    const GmChunk chunk = d_chunks[blockIdx.x];
    GmGroup* d_group = &d_groups[chunk.group];
    // Uniform over the group's blocks: either all of them take part in this pass, or none.
    if (chunk.dense || d_group->stage == GM_STAGE_DONE) return;
    if ((flags & GM_REFINE_SKIP_CANDS) && d_group->has_candidates) return;
    refine_digit(d_group, d_hist + (size_t)chunk.group * GM_FIRST_BINS, d_cand, flags & GM_REFINE_COMPACT,
                 d_group->n_chunks,
                 [&](auto&& on_key) { for_each_raw<K>(chunk, [&](typename K::Raw raw) { on_key(K::key(raw)); }); });
}

extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_refine_candidates(GmGroup* d_groups, unsigned long long* d_hist, const unsigned* d_cand) {
    GmGroup* d_group = &d_groups[blockIdx.x];
    if (d_group->stage == GM_STAGE_DONE || !d_group->has_candidates) return;
    const unsigned long long start = d_group->cand_start, count = d_group->cand_count;
    refine_digit(d_group, d_hist + (size_t)blockIdx.x * GM_FIRST_BINS, nullptr, false, gridDim.y, [&](auto&& on_key) {
        for (unsigned long long i = blockIdx.y * (unsigned long long)GM_BLOCK_THREADS + threadIdx.x; i < count;
             i += (unsigned long long)gridDim.y * GM_BLOCK_THREADS)
            on_key(__ldg(&d_cand[start + i]));
    });
}

// Thin per-dtype entry points.
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_histogram_f32(const GmChunk* d_chunks, GmGroup* d_groups, unsigned long long* d_hist, GmStep* d_step) {
    histogram_pass<KeyF32>(d_chunks, d_groups, d_hist, d_step);
}
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_histogram_bf16(const GmChunk* d_chunks, GmGroup* d_groups, unsigned long long* d_hist, GmStep* d_step) {
    histogram_pass<KeyBF16>(d_chunks, d_groups, d_hist, d_step);
}
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_histogram_f16(const GmChunk* d_chunks, GmGroup* d_groups, unsigned long long* d_hist, GmStep* d_step) {
    histogram_pass<KeyF16>(d_chunks, d_groups, d_hist, d_step);
}
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_refine_f32(const GmChunk* d_chunks, GmGroup* d_groups, unsigned long long* d_hist, unsigned* d_cand, unsigned flags) {
    refine_pass<KeyF32>(d_chunks, d_groups, d_hist, d_cand, flags);
}
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_refine_bf16(const GmChunk* d_chunks, GmGroup* d_groups, unsigned long long* d_hist, unsigned* d_cand, unsigned flags) {
    refine_pass<KeyBF16>(d_chunks, d_groups, d_hist, d_cand, flags);
}
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_refine_f16(const GmChunk* d_chunks, GmGroup* d_groups, unsigned long long* d_hist, unsigned* d_cand, unsigned flags) {
    refine_pass<KeyF16>(d_chunks, d_groups, d_hist, d_cand, flags);
}
