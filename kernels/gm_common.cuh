// Device helpers shared by the selection and optimizer kernels: key traits per gradient dtype,
// the chunk walker with 16-byte loads, and block-wide reductions and scans.
#pragma once
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cstring>

#include "gm_types.cuh"
#include "tuning.cuh"

namespace cg = cooperative_groups;

// |g| keys: the bit pattern with the sign cleared, which orders like the magnitude (NaN above Inf).
struct KeyF32 {
    typedef unsigned int Raw;
    static constexpr unsigned KEY_BITS = 31;
    static constexpr unsigned NON_FINITE = 0x7f800000u;
    static __device__ __forceinline__ unsigned key(Raw raw) { return raw & 0x7fffffffu; }
    static __device__ __forceinline__ float value(Raw raw) { return __uint_as_float(raw); }
};
struct KeyBF16 {
    typedef unsigned short Raw;
    static constexpr unsigned KEY_BITS = 15;
    static constexpr unsigned NON_FINITE = 0x7f80u;
    static __device__ __forceinline__ unsigned key(Raw raw) { return raw & 0x7fffu; }
    static __device__ __forceinline__ float value(Raw raw) { return __uint_as_float((unsigned)raw << 16); }
};
struct KeyF16 {
    typedef unsigned short Raw;
    static constexpr unsigned KEY_BITS = 15;
    static constexpr unsigned NON_FINITE = 0x7c00u;
    static __device__ __forceinline__ unsigned key(Raw raw) { return raw & 0x7fffu; }
    static __device__ __forceinline__ float value(Raw raw) { return __half2float(__ushort_as_half(raw)); }
};

template <class K, class F>
__device__ __forceinline__ void apply_vec(const uint4& vec, F& f) {
    typedef typename K::Raw Raw;
    constexpr unsigned PER_VEC = GM_VEC_BYTES / sizeof(Raw);
    Raw raws[PER_VEC];
    memcpy(raws, &vec, GM_VEC_BYTES);
#pragma unroll
    for (unsigned j = 0; j < PER_VEC; ++j) f(raws[j]);
}

// Calls f(raw) for every entry of the chunk, spread over the block. 16-byte loads, four in flight
// per thread, when the chunk is 16-byte aligned; a scalar loop for the tail (or a misaligned chunk).
template <class K, class F>
__device__ __forceinline__ void for_each_raw(const GmChunk& chunk, const unsigned long long* d_grads, F&& f) {
    typedef typename K::Raw Raw;
    constexpr unsigned PER_VEC = GM_VEC_BYTES / sizeof(Raw);
    constexpr unsigned UNROLL = 4;
    const Raw* d_data = chunk_grads<Raw>(chunk, d_grads);
    unsigned done = 0;
    if ((reinterpret_cast<unsigned long long>(d_data) & (GM_VEC_BYTES - 1)) == 0) {
        const uint4* d_vec = reinterpret_cast<const uint4*>(d_data);
        const unsigned n_vec = chunk.len / PER_VEC;
        unsigned i = threadIdx.x;
        for (; i + (UNROLL - 1) * blockDim.x < n_vec; i += UNROLL * blockDim.x) {
            uint4 vecs[UNROLL];
#pragma unroll
            for (unsigned u = 0; u < UNROLL; ++u) vecs[u] = __ldg(&d_vec[i + u * blockDim.x]);
#pragma unroll
            for (unsigned u = 0; u < UNROLL; ++u) apply_vec<K>(vecs[u], f);
        }
        for (; i < n_vec; i += blockDim.x) apply_vec<K>(__ldg(&d_vec[i]), f);
        done = n_vec * PER_VEC;
    }
    for (unsigned i = done + threadIdx.x; i < chunk.len; i += blockDim.x) f(d_data[i]);
}

struct OpAdd {
    template <typename T>
    __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
struct OpMin {
    template <typename T>
    __device__ __forceinline__ T operator()(T a, T b) const { return a < b ? a : b; }
};

// Reduces one value per thread over the block (all GM_BLOCK_THREADS threads must call it).
// The result is valid in thread 0.
template <typename T, class Op>
__device__ __forceinline__ T block_reduce(T value, T identity, Op op) {
    __shared__ T s_warp[GM_BLOCK_THREADS / 32];
    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) value = op(value, __shfl_xor_sync(0xffffffffu, value, offset));
    __syncthreads();  // s_warp may still be read by an earlier call
    if (lane == 0) s_warp[warp] = value;
    __syncthreads();
    value = identity;
    if (warp == 0) {
        value = lane < GM_BLOCK_THREADS / 32 ? s_warp[lane] : identity;
#pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1) value = op(value, __shfl_xor_sync(0xffffffffu, value, offset));
    }
    return value;
}

// Exclusive prefix sum of one value per thread over the block (all threads must call it).
__device__ __forceinline__ unsigned long long block_exclusive_scan(unsigned long long value) {
    __shared__ unsigned long long s_warp[GM_BLOCK_THREADS / 32];
    const unsigned lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    unsigned long long inclusive = value;
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
        const unsigned long long up = __shfl_up_sync(0xffffffffu, inclusive, offset);
        if (lane >= offset) inclusive += up;
    }
    __syncthreads();
    if (lane == 31) s_warp[warp] = inclusive;
    __syncthreads();
    if (warp == 0) {
        unsigned long long total = lane < GM_BLOCK_THREADS / 32 ? s_warp[lane] : 0ull;
#pragma unroll
        for (int offset = 1; offset < 32; offset <<= 1) {
            const unsigned long long up = __shfl_up_sync(0xffffffffu, total, offset);
            if (lane >= offset) total += up;
        }
        if (lane < GM_BLOCK_THREADS / 32) s_warp[lane] = total;
    }
    __syncthreads();
    return (warp == 0 ? 0ull : s_warp[warp - 1]) + inclusive - value;
}
