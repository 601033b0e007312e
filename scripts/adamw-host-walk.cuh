// Host stand-in for kernels/gm_common.cuh (copied in as gm_common.cuh by
// scripts/adamw-host-check.sh), so that kernels/adamw.cu compiles with g++ and its blocks run one
// thread after another (scripts/adamw-host-walk.cpp). Threads run from the last to thread 0, so
// block_reduce, the kernel's only cross-thread step (at its very end), has summed every thread's
// value by the time thread 0 asks for it. The key traits are copies of gm_common.cuh's: keep them
// in step.
#pragma once
// kernels/adamw.cu leaves out what a sequential walk of a block's threads cannot run (warp votes).
#define GM_HOST_WALK 1
#include <cmath>
#include <cstdint>
#include <cstring>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)

#include "gm_types.cuh"
#include "tuning.cuh"

struct GmDim3 { unsigned x, y, z; };
extern GmDim3 threadIdx, blockIdx, blockDim;
struct uint4 { unsigned x, y, z, w; };
// 16-byte accesses must be 16-byte aligned on the device; here they are counted when they are not.
extern long g_misaligned;
inline uint4 __ldcs(const uint4* p) {
    g_misaligned += (reinterpret_cast<uintptr_t>(p) & 15) != 0;
    return *p;
}
inline void __stcs(uint4* p, uint4 v) {
    g_misaligned += (reinterpret_cast<uintptr_t>(p) & 15) != 0;
    *p = v;
}
inline unsigned __float_as_uint(float x) { unsigned u; memcpy(&u, &x, 4); return u; }
inline float __uint_as_float(unsigned u) { float x; memcpy(&x, &u, 4); return x; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsqrt_rn(double a) { return std::sqrt(a); }
inline float __double2float_rn(double a) { return (float)a; }
inline unsigned short __ushort_as_half(unsigned short raw) { return raw; }
// Exact f16 -> f32.
inline float __half2float(unsigned short h) {
    const unsigned sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    if (exp == 0x1f) return __uint_as_float(sign | 0x7f800000u | (mant << 13));
    if (exp == 0) {
        const float x = std::ldexp((float)mant, -24);
        return sign ? -x : x;
    }
    return __uint_as_float(sign | ((exp + 112) << 23) | (mant << 13));
}
inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
    const unsigned long long old = *p;
    *p += v;
    return old;
}

// The key traits, copied from kernels/gm_common.cuh.
struct KeyF32 {
    typedef unsigned int Raw;
    static constexpr unsigned KEY_BITS = 31;
    static constexpr unsigned NON_FINITE = 0x7f800000u;
    static unsigned key(Raw raw) { return raw & 0x7fffffffu; }
    static float value(Raw raw) { return __uint_as_float(raw); }
};
struct KeyBF16 {
    typedef unsigned short Raw;
    static constexpr unsigned KEY_BITS = 15;
    static constexpr unsigned NON_FINITE = 0x7f80u;
    static unsigned key(Raw raw) { return raw & 0x7fffu; }
    static float value(Raw raw) { return __uint_as_float((unsigned)raw << 16); }
};
struct KeyF16 {
    typedef unsigned short Raw;
    static constexpr unsigned KEY_BITS = 15;
    static constexpr unsigned NON_FINITE = 0x7c00u;
    static unsigned key(Raw raw) { return raw & 0x7fffu; }
    static float value(Raw raw) { return __half2float(__ushort_as_half(raw)); }
};

struct OpAdd {
    template <typename T>
    T operator()(T a, T b) const { return a + b; }
};
extern unsigned long long g_block_sum;  // reset before each block
template <typename T, class Op>
inline T block_reduce(T value, T identity, Op) {
    g_block_sum += value;
    return threadIdx.x == 0 ? (T)g_block_sum : identity;
}
