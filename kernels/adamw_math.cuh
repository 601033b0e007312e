// The per-entry math of the fused masked AdamW (kernels/adamw.cu), kept apart so that a host build
// can check it against the CPU engine bit for bit: scripts/adamw-host-check.sh compiles this header
// with g++ (intrinsics mapped to IEEE host operations, no contraction) and recomputes cases that
// examples/adamw_cases.rs draws with src/adamw/math.rs, src/rng.rs and half.
#pragma once
#include "gm_types.cuh"

typedef unsigned long long u64;

// src/rng.rs in 64-bit unsigned arithmetic (C++ unsigned products wrap, as Rust's wrapping_mul).
#define GM_GOLDEN 0x9E3779B97F4A7C15ull

__device__ __forceinline__ u64 rng_fmix(u64 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// rng::draw: the high half of the index-th SplitMix64 output seeded with key.
__device__ __forceinline__ unsigned rng_draw(u64 key, u64 index) {
    return (unsigned)(rng_fmix(key + (index + 1) * GM_GOLDEN) >> 32);
}

__device__ __forceinline__ float bf16_to_f32(unsigned short raw) { return __uint_as_float((unsigned)raw << 16); }

// half::bf16::from_f32: round to nearest even; a NaN keeps its top bits and turns quiet.
__device__ __forceinline__ unsigned short bf16_nearest(float x) {
    const unsigned bits = __float_as_uint(x);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((bits >> 16) | 0x0040u);
    const unsigned round_bit = 0x8000u;
    const unsigned short high = (unsigned short)(bits >> 16);
    return ((bits & round_bit) != 0 && (bits & (3 * round_bit - 1)) != 0) ? (unsigned short)(high + 1) : high;
}

// rng::stochastic_round_bf16: add 16 random bits below bf16's last bit, then truncate.
__device__ __forceinline__ unsigned short bf16_stochastic(float x, unsigned draw) {
    const unsigned bits = __float_as_uint(x);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((bits >> 16) | 0x0040u);
    return (unsigned short)((bits + (draw & 0xffffu)) >> 16);
}

// math.rs grad_multiplier on the selection's sum of squares, in the same f64 operations.
__device__ __forceinline__ float clipped_grad_mul(double sum_sq, const GmAdamWArgs& args) {
    const double norm = __ddiv_rn(__dsqrt_rn(sum_sq), args.grad_scale);
    const double clip = fmin(__ddiv_rn(args.max_grad_norm, __dadd_rn(norm, 1e-6)), 1.0);
    return __double2float_rn(__ddiv_rn(clip, args.grad_scale));
}

// math.rs masked_update on one entry, in place. Returns whether the entry changes (kept, or masked
// under ZeroGrad); otherwise p, m and v keep their values.
__device__ __forceinline__ bool masked_update(float& p, float& m, float& v, float g_raw, bool keep, bool freeze,
                                              const GmStepScalars& s) {
    const float g = keep ? __fmul_rn(g_raw, s.grad_mul) : 0.0f;
    const float m_new = __fadd_rn(__fmul_rn(s.beta1, m), __fmul_rn(s.one_minus_beta1, g));
    const float v_new = __fadd_rn(__fmul_rn(s.beta2, v), __fmul_rn(s.one_minus_beta2, __fmul_rn(g, g)));
    const float decayed = __fmul_rn(p, s.decay);
    const float denom = __fadd_rn(__fmul_rn(__fsqrt_rn(v_new), s.inv_sqrt_bc2), s.eps);
    const float p_new = __fsub_rn(decayed, __fmul_rn(s.step_size, __fdiv_rn(m_new, denom)));
    const bool write = keep || !freeze;
    if (write) p = p_new, m = m_new, v = v_new;
    return write;
}

// How a parameter is read and stored; the CPU twins are the ParamSlots of src/adamw/cpu.rs.
// `x` is the new value when `write`, else the value `read` returned.
struct ParamF32 {  // F32Slots
    typedef float Raw;
    static constexpr bool MASTER = false;
    static __device__ __forceinline__ float read(Raw raw, float, bool) { return raw; }
    static __device__ __forceinline__ void store(Raw& raw, float&, float x, bool write, u64, u64) {
        if (write) raw = x;
    }
};
struct ParamMaster {  // MasterSlots: the f32 master is updated, the parameter is its nearest bf16
    typedef unsigned short Raw;
    static constexpr bool MASTER = true;
    // `init`: the first step of this precision, where the master starts as the bf16 parameter.
    static __device__ __forceinline__ float read(Raw raw, float master, bool init) {
        return init ? bf16_to_f32(raw) : master;
    }
    static __device__ __forceinline__ void store(Raw& raw, float& master, float x, bool write, u64, u64) {
        master = x;
        if (write) raw = bf16_nearest(x);
    }
};
struct ParamRound {  // RoundSlots: no master, stochastic rounding keyed by the global index
    typedef unsigned short Raw;
    static constexpr bool MASTER = false;
    static __device__ __forceinline__ float read(Raw raw, float, bool) { return bf16_to_f32(raw); }
    static __device__ __forceinline__ void store(Raw& raw, float&, float x, bool write, u64 round_key, u64 index) {
        if (write) raw = bf16_stochastic(x, rng_draw(round_key, index));
    }
};
