// Host build of kernels/adamw_math.cuh, the optimizer kernel's per-entry math, against cases written
// by examples/adamw_cases.rs from the CPU engine. The CUDA intrinsics map to the IEEE host
// operations they implement on the device (each rounded to nearest; build with -ffp-contract=off
// so that nothing fuses into an FMA); denormals are kept on both sides (nvcc's default -ftz=false).
// Run by scripts/adamw-host-check.sh.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#define __device__
#define __forceinline__ inline
#include "gm_types.cuh"
static inline unsigned __float_as_uint(float x) { unsigned u; memcpy(&u, &x, 4); return u; }
static inline float __uint_as_float(unsigned u) { float x; memcpy(&x, &u, 4); return x; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fsqrt_rn(float a) { return std::sqrt(a); }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsqrt_rn(double a) { return std::sqrt(a); }
static inline float __double2float_rn(double a) { return (float)a; }
#include "adamw_math.cuh"

static float f(unsigned long long u) { return __uint_as_float((unsigned)u); }
static double d(unsigned long long u) { double x; memcpy(&x, &u, 8); return x; }

int main(int argc, char** argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s cases.txt\n", argv[0]);
        return 2;
    }
    FILE* in = fopen(argv[1], "r");
    if (!in) {
        perror(argv[1]);
        return 2;
    }
    char kind[16];
    long n[4] = {0, 0, 0, 0}, bad = 0;
    while (fscanf(in, "%15s", kind) == 1) {
        if (!strcmp(kind, "draw")) {
            unsigned long long key, index, want;
            fscanf(in, "%llx %llx %llx", &key, &index, &want);
            if (rng_draw(key, index) != want) { if (bad++ < 5) printf("draw %llx %llx\n", key, index); }
            n[0]++;
        } else if (!strcmp(kind, "round")) {
            unsigned long long x, dr, near, sto;
            fscanf(in, "%llx %llx %llx %llx", &x, &dr, &near, &sto);
            if (bf16_nearest(f(x)) != near) { if (bad++ < 5) printf("nearest %llx\n", x); }
            if (bf16_stochastic(f(x), (unsigned)dr) != sto) { if (bad++ < 5) printf("stochastic %llx %llx\n", x, dr); }
            n[1]++;
        } else if (!strcmp(kind, "update")) {
            unsigned long long sv[9], p, m, v, g, keep, freeze, p2, m2, v2;
            for (int i = 0; i < 9; ++i) fscanf(in, "%llx", &sv[i]);
            fscanf(in, "%llx %llx %llx %llx %llu %llu %llx %llx %llx", &p, &m, &v, &g, &keep, &freeze, &p2, &m2, &v2);
            GmStepScalars s = {f(sv[0]), f(sv[1]), f(sv[2]), f(sv[3]), f(sv[4]), f(sv[5]), f(sv[6]), f(sv[7]), f(sv[8])};
            float pp = f(p), mm = f(m), vv = f(v);
            masked_update(pp, mm, vv, f(g), keep != 0, freeze != 0, s);
            // A NaN result is compared as NaN: its payload is not part of the contract (the GPU
            // makes canonical NaNs).
            auto same = [](float a, unsigned long long b) { return __float_as_uint(a) == b || (std::isnan(a) && std::isnan(f(b))); };
            if (!same(pp, p2) || !same(mm, m2) || !same(vv, v2)) {
                if (bad++ < 5) printf("update p %llx m %llx v %llx g %llx keep %llu freeze %llu: got %x %x %x want %llx %llx %llx\n", p, m, v, g, keep, freeze, __float_as_uint(pp), __float_as_uint(mm), __float_as_uint(vv), p2, m2, v2);
            }
            n[2]++;
        } else if (!strcmp(kind, "clip")) {
            unsigned long long sum, maxn, scale, want;
            fscanf(in, "%llx %llx %llx %llx", &sum, &maxn, &scale, &want);
            GmAdamWArgs args = {};
            args.max_grad_norm = d(maxn);
            args.grad_scale = d(scale);
            if (__float_as_uint(clipped_grad_mul(d(sum), args)) != want) { if (bad++ < 5) printf("clip %llx\n", sum); }
            n[3]++;
        }
    }
    printf("draw %ld, round %ld, update %ld, clip %ld cases; %ld mismatches\n", n[0], n[1], n[2], n[3], bad);
    return bad != 0;
}
