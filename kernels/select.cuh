// The device side of the radix select (the algorithm is explained above select.cu's entry points):
// shared by select.cu (one rank) and select_shard.cu (ranks that all-reduce their histograms).
#pragma once

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

// DECIDE: the last block of each group chooses the bucket (one rank). Sharded selection
// (select_shard.cu) instantiates it false: the histograms are all-reduced first, then
// gm_shard_decide chooses.
template <class K, bool DECIDE = true>
__device__ void histogram_pass(const GmChunk* d_chunks, const unsigned long long* d_grads, GmGroup* d_groups,
                               unsigned long long* d_hist, GmStep* d_step) {
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
    for_each_raw<K>(chunk, d_grads, [&](typename K::Raw raw) {
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
    if (!DECIDE || !arrive_last(d_group, d_group->n_chunks)) return;
    descend(d_group, d_group_hist, GM_FIRST_DIGIT_BITS, shift);
    __syncthreads();
    if (threadIdx.x == 0 && d_group->stage == GM_STAGE_REFINE && shift > next_width(shift))
        reserve_candidates(d_group, d_step);
}

// One refinement digit over keys produced by `walk` (a chunk of g, or a candidate range).
// Every block of the group must call it with the same flags; `expected` blocks arrive.
template <bool DECIDE = true, class Walk>
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
    if (!DECIDE || !arrive_last(d_group, expected)) return;
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

template <class K, bool DECIDE = true>
__device__ void refine_pass(const GmChunk* d_chunks, const unsigned long long* d_grads, GmGroup* d_groups,
                            unsigned long long* d_hist, unsigned* d_cand, unsigned flags) {
    const GmChunk chunk = d_chunks[blockIdx.x];
    GmGroup* d_group = &d_groups[chunk.group];
    // Uniform over the group's blocks: either all of them take part in this pass, or none.
    if (chunk.dense || d_group->stage == GM_STAGE_DONE) return;
    if ((flags & GM_REFINE_SKIP_CANDS) && d_group->has_candidates) return;
    refine_digit<DECIDE>(d_group, d_hist + (size_t)chunk.group * GM_FIRST_BINS, d_cand, flags & GM_REFINE_COMPACT,
                 d_group->n_chunks,
                 [&](auto&& on_key) { for_each_raw<K>(chunk, d_grads, [&](typename K::Raw raw) { on_key(K::key(raw)); }); });
}

// The last f32 digit over a group's compacted candidates (grid: groups x GM_CANDIDATE_BLOCKS).
template <bool DECIDE = true>
__device__ void candidates_pass(GmGroup* d_groups, unsigned long long* d_hist, const unsigned* d_cand) {
    GmGroup* d_group = &d_groups[blockIdx.x];
    if (d_group->stage == GM_STAGE_DONE || !d_group->has_candidates) return;
    const unsigned long long start = d_group->cand_start, count = d_group->cand_count;
    refine_digit<DECIDE>(d_group, d_hist + (size_t)blockIdx.x * GM_FIRST_BINS, nullptr, false, gridDim.y, [&](auto&& on_key) {
        for (unsigned long long i = blockIdx.y * (unsigned long long)GM_BLOCK_THREADS + threadIdx.x; i < count;
             i += (unsigned long long)gridDim.y * GM_BLOCK_THREADS)
            on_key(__ldg(&d_cand[start + i]));
    });
}
