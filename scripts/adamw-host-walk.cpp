// Runs kernels/adamw.cu's blocks on the host, one thread after another (with
// scripts/adamw-host-walk.cuh standing in for gm_common.cuh), over a work list like CudaSelector's,
// and compares every buffer, bit for bit, with a plain loop over the entries that follows
// src/adamw/cpu.rs. It checks what the per-entry host check cannot: the chunk walk (16-byte packs,
// the scalar tail, misaligned buffers), the tensor table and state offsets, dense, frozen and
// skipped steps, master initialisation, the keep rules, the random-mode kept counts, that nothing
// outside a tensor is written and that every 16-byte access is aligned.
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "adamw.cu"

GmDim3 threadIdx, blockIdx, blockDim;
unsigned long long g_block_sum;
long g_misaligned;

typedef void (*Kernel)(const GmChunk*, const u64*, const GmParamTensor*, const GmGroup*, const GmStep*, u64*,
                       const GmStepPlan*);

enum Storage { F32, MASTER, ROUND };

// 16-byte aligned storage with `shift` elements of slack in front (to misalign on purpose), filled
// with a sentinel so that stray writes show.
template <class T>
struct Buffer {
    std::vector<T> data;
    size_t shift;
    Buffer(size_t n, size_t shift_, T fill) : data(n + shift_ + 8, fill), shift(shift_) {}
    T* ptr() {
        const uintptr_t base = (reinterpret_cast<uintptr_t>(data.data()) + 15) & ~uintptr_t(15);
        return reinterpret_cast<T*>(base) + shift;
    }
};

static std::mt19937_64 rng(7);
static float any_value() {
    switch (rng() % 4) {
        case 0: return std::ldexp((float)(rng() % 2000) - 1000.0f, -12);
        case 1: return std::ldexp((float)(rng() % 2000) - 1000.0f, -30);
        case 2: return 0.0f;
        default: return ((rng() % 16) - 8) * 0.125f;  // ties
    }
}
template <class T> static T raw_of(float x);
template <> unsigned raw_of<unsigned>(float x) { return __float_as_uint(x); }
template <> float raw_of<float>(float x) { return x; }
template <> unsigned short raw_of<unsigned short>(float x) { return (unsigned short)(__float_as_uint(x) >> 16); }

// One configuration over every tensor; returns the number of mismatching words.
template <class K, class P>
static long run(Kernel kernel, Storage storage, const std::vector<size_t>& lengths, size_t grad_shift, bool random,
                bool freeze, bool init, bool skip) {
    typedef typename K::Raw G;
    typedef typename P::Raw Praw;
    const size_t n = lengths.size();
    std::vector<u64> first(n + 1, 0), state_first(n + 1, 0);
    for (size_t t = 0; t < n; ++t) {
        first[t + 1] = first[t] + lengths[t];
        state_first[t + 1] = (state_first[t] + lengths[t] + 3) / 4 * 4;
    }
    std::vector<Buffer<G>> grads;
    std::vector<Buffer<Praw>> params, want_params;
    for (size_t t = 0; t < n; ++t) {
        grads.emplace_back(lengths[t], t % 2 ? grad_shift : 0, G(0));
        params.emplace_back(lengths[t], 0, Praw(0));
        for (size_t i = 0; i < lengths[t]; ++i) {
            grads[t].ptr()[i] = raw_of<G>(any_value());
            params[t].ptr()[i] = raw_of<Praw>(any_value());
        }
        params[t].ptr()[lengths[t]] = raw_of<Praw>(12345.0f);  // sentinel after the tensor
    }
    want_params = params;
    const size_t total = state_first[n];
    Buffer<float> m(total, 0, 777.0f), v(total, 0, 777.0f), master(total, 0, 777.0f);
    for (size_t t = 0; t < n; ++t)
        for (size_t i = 0; i < lengths[t]; ++i) {
            const size_t at = state_first[t] + i;
            m.ptr()[at] = any_value(), v.ptr()[at] = std::fabs(any_value()), master.ptr()[at] = any_value();
        }
    Buffer<float> want_m = m, want_v = v, want_master = master;

    // Per-tensor groups, tensor 2 dense, tensor 3 frozen; the work list as CudaSelector builds it.
    std::vector<GmGroup> groups(n);
    std::vector<GmParamTensor> tensors(n);
    std::vector<GmChunk> chunks;
    std::vector<u64> grad_table(n);
    for (size_t t = 0; t < n; ++t) {
        groups[t].threshold_key = t == 5 ? GM_KEEP_NONE : (unsigned)(rng() % (K::KEY_BITS == 31 ? 0x3f000000u : 0x3f00u));
        tensors[t] = {(u64)params[t].ptr(), (u64)(m.ptr() + state_first[t]), (u64)(v.ptr() + state_first[t]),
                      storage == MASTER ? (u64)(master.ptr() + state_first[t]) : 0ull, first[t], t == 3 ? 1u : 0u, 0u};
        grad_table[t] = (u64)grads[t].ptr();
        for (size_t start = 0; start < lengths[t]; start += GM_CHUNK_LEN)
            chunks.push_back({(u64)start, first[t] + start,
                              (unsigned)std::min<size_t>(GM_CHUNK_LEN, lengths[t] - start), (unsigned)t, t == 2 ? 1u : 0u,
                              (unsigned)t});
    }
    // A skipped step: by the selection's non-finite count, or (every other time) by a plan that
    // missed the device's step count; either way nothing may be written.
    static unsigned skip_turn = 0;
    const bool missed = skip && skip_turn++ % 2 == 1;
    GmStep step = {};
    step.non_finite = skip && !missed ? 1 : 0;
    GmStepScalars s = {0.25f, 0.9f, 0.1f, 0.999f, 0.001f, 0.999f, 1e-3f, 31.6f, 1e-8f};
    GmAdamWArgs args = {};
    args.random_key = rng(), args.random_cut = 0x99999999ull, args.round_key = rng();
    args.grad_scale = 1.0, args.keep_rule = random ? GM_KEEP_RANDOM : GM_KEEP_THRESHOLD;
    args.freeze = freeze, args.init_master = init;
    std::vector<u64> kept(n, 0), want_kept(n, 0);
    GmStepPlan plan = {};
    plan.scalars = s, plan.args = args, plan.missed = missed;

    blockDim = {GM_BLOCK_THREADS, 1, 1};
    for (unsigned b = 0; b < chunks.size(); ++b) {
        blockIdx = {b, 0, 0};
        g_block_sum = 0;
        for (int th = GM_BLOCK_THREADS - 1; th >= 0; --th) {
            threadIdx = {(unsigned)th, 0, 0};
            kernel(chunks.data(), grad_table.data(), tensors.data(), groups.data(), &step, kept.data(), &plan);
        }
    }

    // The plain loop (src/adamw/cpu.rs: KeepRule, ParamSlots).
    for (size_t t = 0; t < n && !skip; ++t) {
        const bool frozen = t == 3, dense = t == 2, init_master = storage == MASTER && init;
        if (frozen && !init_master) continue;
        for (size_t i = 0; i < lengths[t]; ++i) {
            const u64 index = first[t] + i;
            const G g = grads[t].ptr()[i];
            bool keep = dense || (random ? (u64)rng_draw(args.random_key, index) >= args.random_cut
                                         : K::key(g) >= groups[t].threshold_key);
            if (frozen) keep = false;
            if (keep && !dense && random) want_kept[t]++;
            Praw& raw = want_params[t].ptr()[i];
            float& mm = want_m.ptr()[state_first[t] + i];
            float& vv = want_v.ptr()[state_first[t] + i];
            float& ms = want_master.ptr()[state_first[t] + i];
            if (init_master) ms = bf16_to_f32((unsigned short)raw);
            float p = storage == F32 ? (float)raw : storage == MASTER ? ms : bf16_to_f32((unsigned short)raw);
            const bool write = masked_update(p, mm, vv, K::value(g), keep, freeze || frozen, s);
            if (!write) continue;
            if (storage == F32) raw = raw_of<Praw>(p);
            if (storage == MASTER) ms = p, raw = (Praw)bf16_nearest(p);
            if (storage == ROUND) raw = (Praw)bf16_stochastic(p, rng_draw(args.round_key, index));
        }
    }
    long bad = 0;
    auto words = [&](const void* a, const void* b, size_t bytes) {
        long diff = 0;
        for (size_t i = 0; i < bytes; ++i) diff += ((const char*)a)[i] != ((const char*)b)[i];
        return diff;
    };
    for (size_t t = 0; t < n; ++t) bad += words(params[t].data.data(), want_params[t].data.data(), params[t].data.size() * sizeof(Praw));
    bad += words(m.data.data(), want_m.data.data(), m.data.size() * 4);
    bad += words(v.data.data(), want_v.data.data(), v.data.size() * 4);
    if (storage == MASTER) bad += words(master.data.data(), want_master.data.data(), master.data.size() * 4);
    for (size_t t = 0; t < n; ++t) bad += kept[t] != want_kept[t];
    return bad;
}

int main() {
    const std::vector<size_t> lengths = {0, 1, 5, 9, 3, 31, 4, 8, 1000, GM_CHUNK_LEN + 13, 2 * GM_CHUNK_LEN + 7};
    long bad = 0, runs = 0;
    for (int config = 0; config < 32; ++config) {
        const bool random = config & 1, freeze = config & 2, init = config & 4, skip = config & 8;
        const size_t shift = config & 16 ? 1 : 0;  // odd tensors' gradients one element past 16 bytes
        long b = 0;
        b += run<KeyF32, ParamF32>(gm_adamw_f32_f32, F32, lengths, shift, random, freeze, init, skip);
        b += run<KeyBF16, ParamF32>(gm_adamw_f32_bf16, F32, lengths, shift, random, freeze, init, skip);
        b += run<KeyF16, ParamF32>(gm_adamw_f32_f16, F32, lengths, shift, random, freeze, init, skip);
        b += run<KeyBF16, ParamMaster>(gm_adamw_master_bf16, MASTER, lengths, shift, random, freeze, init, skip);
        b += run<KeyBF16, ParamRound>(gm_adamw_round_bf16, ROUND, lengths, shift, random, freeze, init, skip);
        if (b) printf("config random=%d freeze=%d init=%d skip=%d shift=%zu: %ld mismatching bytes\n", random, freeze, init, skip, shift, b);
        bad += b, runs += 5;
    }
    printf("%ld runs over %zu tensors; %ld mismatching bytes, %ld misaligned 16-byte accesses\n", runs,
           lengths.size(), bad, g_misaligned);
    return bad != 0 || g_misaligned != 0;
}
