// The fused masked AdamW: one launch over every tensor of the model (DESIGN.md §1, §3).
//
// It runs after the selection (kernels/select.cu), on the same stream, over the same work list:
// one block per GmChunk, a run of at most GM_CHUNK_LEN entries of one tensor. Before it,
// gm_step_plan (one thread) picks the step's scalars and rng keys by the device's count of steps
// taken, and counts the step if it is taken: the host never waits for a skip flag. Each block:
//  1. returns at once when the selection's pass 1 counted an Inf or NaN gradient anywhere
//     (GmStep.non_finite > 0). The step is skipped on the device: p, m, v and the master weights
//     stay bit-identical, and the step is not counted;
//  2. finds its tensor in the GmParamTensor table (where p, m, v and the master weights live) and
//     leaves a frozen tensor alone;
//  3. decides which entries are kept. A dense tensor keeps all of them. GMT keeps key(g) >= the
//     group's threshold_key (key 0 after mask ratio 0 keeps everything, GM_KEEP_NONE nothing). The
//     random baseline keeps an entry when the counter-based draw for (seed, step, global index)
//     is >= the cut (src/rng.rs);
//  4. applies src/adamw/math.rs masked_update line for line. Every operation is rounded on its
//     own (__fmul_rn and friends never contract into an FMA), so p, m and v equal the CPU engine's
//     bit for bit. With clipping, grad_mul comes from the selection's sum of squares on the device,
//     by math.rs grad_multiplier's f64 operations, so the step needs no host round trip;
//  5. stores the parameter: f32; bf16 rounded to nearest even from the updated f32 master
//     (half::bf16::from_f32); or bf16 rounded stochastically with the draw for (seed, step, global
//     index), which makes the result independent of the launch geometry.
// When every buffer of the chunk is 16-byte aligned, a thread moves packs of 4 entries (all f32)
// or 8 (a bf16 buffer involved) with 16-byte loads and stores, and a scalar loop takes the tail.
// Every byte is touched once, so loads and stores are streaming (evict-first). An f32 entry costs
// 28 B: g, p, m and v read, p, m and v written, the floor of any fused AdamW (as in llm.c's
// adamw kernel); a bf16 entry with f32 master weights under ZeroGrad costs 28 B as well (g 2,
// master, m, v read; p 2, master, m, v written: the old bf16 value is not read). In random mode
// each block adds its kept count to its group with one atomic.

#include "gm_common.cuh"
#include "adamw_math.cuh"

#define GM_RULE_NONE 2u  // besides GM_KEEP_THRESHOLD and GM_KEEP_RANDOM: a frozen tensor
#define GM_RULE_ALL 3u   // a dense tensor

template <typename T, unsigned N>
__device__ __forceinline__ void load_pack(const T* d_src, T (&out)[N]) {
    constexpr unsigned VECS = N * sizeof(T) / GM_VEC_BYTES;
    static_assert(VECS * GM_VEC_BYTES == N * sizeof(T), "a pack is whole 16-byte vectors");
    uint4 vecs[VECS];
#pragma unroll
    for (unsigned k = 0; k < VECS; ++k) vecs[k] = __ldcs(reinterpret_cast<const uint4*>(d_src) + k);
    memcpy(out, vecs, sizeof(out));
}

template <typename T, unsigned N>
__device__ __forceinline__ void store_pack(T* d_dst, const T (&in)[N]) {
    constexpr unsigned VECS = N * sizeof(T) / GM_VEC_BYTES;
    uint4 vecs[VECS];
    memcpy(vecs, in, sizeof(vecs));
#pragma unroll
    for (unsigned k = 0; k < VECS; ++k) __stcs(reinterpret_cast<uint4*>(d_dst) + k, vecs[k]);
}

// Whether an entry is kept under `rule`: the one rule of the update and of the stability pass.
template <class K>
__device__ __forceinline__ bool keeps(unsigned rule, typename K::Raw raw_g, unsigned threshold,
                                      const GmAdamWArgs& args, u64 index) {
    switch (rule) {
        case GM_RULE_ALL: return true;
        case GM_RULE_NONE: return false;
        case GM_KEEP_THRESHOLD: return K::key(raw_g) >= threshold;
        default: return (u64)rng_draw(args.random_key, index) >= args.random_cut;
    }
}

// The chunk's keep rule: a frozen tensor keeps nothing, a dense one everything.
__device__ __forceinline__ unsigned chunk_rule(const GmChunk& chunk, const GmParamTensor& tensor,
                                               const GmAdamWArgs& args) {
    return tensor.frozen ? GM_RULE_NONE : chunk.dense ? GM_RULE_ALL : args.keep_rule;
}

// K: the gradient's key traits (gm_common.cuh); P: the parameter storage above.
template <class K, class P>
__device__ void adamw_pass(const GmChunk* d_chunks, const u64* d_grads, const GmParamTensor* d_tensors,
                           const GmGroup* d_groups, const GmStep* d_step, u64* d_kept, const GmStepPlan* d_plan) {
    typedef typename K::Raw G;
    typedef typename P::Raw Praw;
    if (d_step->non_finite != 0) return;  // skipped step: every block leaves, nothing is written
    if (d_plan->missed) return;           // no plan for the device's count (a host bug, reported there)
    GmStepScalars s = d_plan->scalars;
    const GmAdamWArgs args = d_plan->args;
    const GmChunk chunk = d_chunks[blockIdx.x];
    const GmParamTensor tensor = d_tensors[chunk.tensor];
    const bool init = P::MASTER && args.init_master;
    // A frozen tensor is left alone, except that its master weights start as its parameters.
    if (tensor.frozen && !init) return;
    const unsigned rule = chunk_rule(chunk, tensor, args);
    const unsigned threshold = d_groups[chunk.group].threshold_key;
    const bool freeze = args.freeze || tensor.frozen;
    if (args.clip) s.grad_mul = clipped_grad_mul(d_step->sum_sq, args);

    const u64 offset = chunk.first - tensor.first;  // of the chunk within its tensor
    const G* d_g = chunk_grads<G>(chunk, d_grads);
    Praw* d_p = reinterpret_cast<Praw*>(tensor.d_param) + offset;
    float* d_m = reinterpret_cast<float*>(tensor.d_m) + offset;
    float* d_v = reinterpret_cast<float*>(tensor.d_v) + offset;
    float* d_master = P::MASTER ? reinterpret_cast<float*>(tensor.d_master) + offset : nullptr;

    // One entry, in registers. Returns whether it was kept; `written` gathers whether it changed.
    auto update = [&](G raw_g, Praw& raw_p, float& m, float& v, float& master, u64 index, bool& written) {
        const bool keep = keeps<K>(rule, raw_g, threshold, args, index);
        float p = P::read(raw_p, master, init);
        const bool write = masked_update(p, m, v, K::value(raw_g), keep, freeze, s);
        P::store(raw_p, master, p, write, args.round_key, index);
        written |= write;
        return keep;
    };

    // With master weights past their first step, under ZeroGrad every entry is written: the bf16
    // parameter is then only an output (its old value would be read for nothing, 2 B/param; the
    // stand-in driver's traffic counters showed it).
    const bool p_is_output = P::MASTER && !init && !freeze;
    constexpr unsigned N = (sizeof(G) == 4 && sizeof(Praw) == 4) ? 4 : 8;
    const u64 addresses = (u64)d_g | (u64)d_p | (u64)d_m | (u64)d_v | (u64)d_master;
    const unsigned n_packs = (addresses & (GM_VEC_BYTES - 1)) == 0 ? chunk.len / N : 0;
    unsigned kept = 0;
    for (unsigned pack = threadIdx.x; pack < n_packs; pack += blockDim.x) {
        const unsigned at = pack * N;
        G g[N];
        Praw p[N];
        float m[N], v[N], master[N];
        load_pack(d_g + at, g);
        if (p_is_output) {
#pragma unroll
            for (unsigned j = 0; j < N; ++j) p[j] = 0;
        } else {
            load_pack(d_p + at, p);
        }
        load_pack(d_m + at, m);
        load_pack(d_v + at, v);
        if (P::MASTER && !init) {
            load_pack(d_master + at, master);
        } else {
#pragma unroll
            for (unsigned j = 0; j < N; ++j) master[j] = 0.0f;
        }
        bool written = false;
#pragma unroll
        for (unsigned j = 0; j < N; ++j) kept += update(g[j], p[j], m[j], v[j], master[j], chunk.first + at + j, written);
        if (written) {  // Freeze with every entry masked (or a frozen tensor) writes nothing
            store_pack(d_p + at, p);
            store_pack(d_m + at, m);
            store_pack(d_v + at, v);
        }
        if (P::MASTER && (written || init)) store_pack(d_master + at, master);
    }
    for (unsigned i = n_packs * N + threadIdx.x; i < chunk.len; i += blockDim.x) {
        Praw p = p_is_output ? Praw(0) : d_p[i];
        float m = d_m[i], v = d_v[i], master = P::MASTER && !init ? d_master[i] : 0.0f;
        bool written = false;
        kept += update(d_g[i], p, m, v, master, chunk.first + i, written);
        if (written) d_p[i] = p, d_m[i] = m, d_v[i] = v;
        if (P::MASTER && (written || init)) d_master[i] = master;
    }

    if (args.keep_rule == GM_KEEP_RANDOM && !chunk.dense) {  // uniform over the block
        const u64 block_kept = block_reduce((u64)kept, 0ull, OpAdd());
        if (threadIdx.x == 0 && block_kept) atomicAdd(&d_kept[chunk.group], block_kept);
    }
}

// Picks the step's plan by the device's count of steps taken (one thread, between the selection
// and the update: the update and the stability pass read *d_current), then counts the step if it
// is taken (the selection's non-finite count is final). A count outside the host's window
// [base, base + n_plans) marks the copy missed, so that nothing is written, and is counted for the
// host to report.
extern "C" __global__ void gm_step_plan(const GmStep* d_step, GmStepCount* d_count, const GmStepPlan* d_plans,
                                        u64 base, unsigned n_plans, GmStepPlan* d_current) {
    if (threadIdx.x != 0 || blockIdx.x != 0) return;
    const u64 index = d_count->taken - base;  // wraps to a huge value below base
    if (index >= n_plans) {
        d_current->missed = 1;
        d_count->missed += 1;
        return;
    }
    *d_current = d_plans[index];
    d_current->missed = 0;
    if (d_step->non_finite == 0) d_count->taken += 1;
}

// Thin entry points: gm_adamw_<parameter storage>_<gradient dtype>.
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_adamw_f32_f32(const GmChunk* d_chunks, const u64* d_grads, const GmParamTensor* d_tensors, const GmGroup* d_groups,
                     const GmStep* d_step, u64* d_kept, const GmStepPlan* d_plan) {
    adamw_pass<KeyF32, ParamF32>(d_chunks, d_grads, d_tensors, d_groups, d_step, d_kept, d_plan);
}
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_adamw_f32_bf16(const GmChunk* d_chunks, const u64* d_grads, const GmParamTensor* d_tensors, const GmGroup* d_groups,
                      const GmStep* d_step, u64* d_kept, const GmStepPlan* d_plan) {
    adamw_pass<KeyBF16, ParamF32>(d_chunks, d_grads, d_tensors, d_groups, d_step, d_kept, d_plan);
}
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_adamw_f32_f16(const GmChunk* d_chunks, const u64* d_grads, const GmParamTensor* d_tensors, const GmGroup* d_groups,
                     const GmStep* d_step, u64* d_kept, const GmStepPlan* d_plan) {
    adamw_pass<KeyF16, ParamF32>(d_chunks, d_grads, d_tensors, d_groups, d_step, d_kept, d_plan);
}
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_adamw_master_bf16(const GmChunk* d_chunks, const u64* d_grads, const GmParamTensor* d_tensors, const GmGroup* d_groups,
                         const GmStep* d_step, u64* d_kept, const GmStepPlan* d_plan) {
    adamw_pass<KeyBF16, ParamMaster>(d_chunks, d_grads, d_tensors, d_groups, d_step, d_kept, d_plan);
}
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_adamw_round_bf16(const GmChunk* d_chunks, const u64* d_grads, const GmParamTensor* d_tensors, const GmGroup* d_groups,
                        const GmStep* d_step, u64* d_kept, const GmStepPlan* d_plan) {
    adamw_pass<KeyBF16, ParamRound>(d_chunks, d_grads, d_tensors, d_groups, d_step, d_kept, d_plan);
}

// The host walk (scripts/adamw-host-check.sh) runs a block's threads one after another, which a
// warp ballot cannot: it checks the update only. The stability pass runs on the stand-in driver's
// warps (tests/adamw_cuda_stability.rs).
#ifndef GM_HOST_WALK

// Mask stability (src/adamw/stability.rs), when the optimizer tracks it: launched after the update
// over the same work list and with the same arguments, it re-decides every entry with keeps(), so
// its mask is the update's. Block b owns the GM_CHUNK_LEN / 32 words of d_bits from
// b * GM_CHUNK_LEN / 32: bit j of word w is entry 32 w + j of its chunk, set when that entry was
// kept at the last step taken. Each warp forms a word with one ballot; lane 0 counts the kept
// entries and those also kept before, swaps the word in, and the block adds its two counts to its
// tensor's pair in d_counts (kept, kept before) with one atomic each. A skipped step changes
// nothing. It reads g once more and 1/8 B of bits per entry, and writes as many bits.
template <class K>
__device__ void stability_pass(const GmChunk* d_chunks, const u64* d_grads, const GmParamTensor* d_tensors,
                               const GmGroup* d_groups, const GmStep* d_step, unsigned* d_bits, u64* d_counts,
                               const GmStepPlan* d_plan) {
    typedef typename K::Raw G;
    if (d_step->non_finite != 0 || d_plan->missed) return;
    const GmAdamWArgs args = d_plan->args;
    const GmChunk chunk = d_chunks[blockIdx.x];
    const GmParamTensor tensor = d_tensors[chunk.tensor];
    const unsigned rule = chunk_rule(chunk, tensor, args);
    const unsigned threshold = d_groups[chunk.group].threshold_key;
    const G* d_g = chunk_grads<G>(chunk, d_grads);
    unsigned* d_words = d_bits + (u64)blockIdx.x * (GM_CHUNK_LEN / 32);
    const unsigned n_words = (chunk.len + 31) / 32;
    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    u64 kept = 0, before = 0;  // lane 0's counts
    for (unsigned w = warp; w < n_words; w += blockDim.x >> 5) {  // uniform over the warp
        const unsigned i = w * 32 + lane;
        const bool keep = i < chunk.len && keeps<K>(rule, d_g[i], threshold, args, chunk.first + i);
        const unsigned word = __ballot_sync(0xffffffffu, keep);
        if (lane == 0) {
            const unsigned old = d_words[w];
            d_words[w] = word;
            kept += __popc(word);
            before += __popc(word & old);
        }
    }
    kept = block_reduce(kept, 0ull, OpAdd());
    before = block_reduce(before, 0ull, OpAdd());
    if (threadIdx.x == 0) {
        if (kept) atomicAdd(&d_counts[2 * chunk.tensor], kept);
        if (before) atomicAdd(&d_counts[2 * chunk.tensor + 1], before);
    }
}

// Entry points per gradient dtype: gm_stability_<gradient dtype>.
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_stability_f32(const GmChunk* d_chunks, const u64* d_grads, const GmParamTensor* d_tensors, const GmGroup* d_groups,
                     const GmStep* d_step, unsigned* d_bits, u64* d_counts, const GmStepPlan* d_plan) {
    stability_pass<KeyF32>(d_chunks, d_grads, d_tensors, d_groups, d_step, d_bits, d_counts, d_plan);
}
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_stability_bf16(const GmChunk* d_chunks, const u64* d_grads, const GmParamTensor* d_tensors, const GmGroup* d_groups,
                      const GmStep* d_step, unsigned* d_bits, u64* d_counts, const GmStepPlan* d_plan) {
    stability_pass<KeyBF16>(d_chunks, d_grads, d_tensors, d_groups, d_step, d_bits, d_counts, d_plan);
}
extern "C" __global__ void __launch_bounds__(GM_BLOCK_THREADS)
    gm_stability_f16(const GmChunk* d_chunks, const u64* d_grads, const GmParamTensor* d_tensors, const GmGroup* d_groups,
                     const GmStep* d_step, unsigned* d_bits, u64* d_counts, const GmStepPlan* d_plan) {
    stability_pass<KeyF16>(d_chunks, d_grads, d_tensors, d_groups, d_step, d_bits, d_counts, d_plan);
}

#endif  // GM_HOST_WALK
