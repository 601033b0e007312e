// Structs shared by the kernels and the host, mirrored by src/cuda/types.rs (#[repr(C)]), and
// chunk_grads, the one way the kernels find a chunk's gradients. For the structs,
// both sides assert the sizes. Keep every field naturally aligned and the structs padded to 8 bytes
// (GmStepScalars excepted: it mirrors an existing 36-byte Rust struct).
#pragma once
#include <cstdint>

// One entry of the work list: a run of at most GM_CHUNK_LEN entries of one tensor. Built and
// uploaded once; it holds no address. The kernels find the chunk's gradients at
// d_grads[tensor] + start (elements), d_grads being the table of gradient buffers that the host
// uploads (n_tensors x 8 B) only when a buffer moves.
struct GmChunk {
    unsigned long long start;   // the chunk's first entry in its tensor's (local) gradient buffer
    unsigned long long first;   // index of that entry in the concatenation of all tensors
    unsigned int len;           // entries in this chunk
    unsigned int group;         // selection group of its tensor
    unsigned int dense;         // 1: never masked; counted in the step totals only
    unsigned int tensor;        // tensor index in the table
};

// The chunk's first gradient entry, as elements of type Raw: its tensor's buffer in the gradient
// table, plus its start.
template <class Raw>
__device__ __forceinline__ const Raw* chunk_grads(const GmChunk& chunk, const unsigned long long* d_grads) {
    return reinterpret_cast<const Raw*>(d_grads[chunk.tensor]) + chunk.start;
}

// Selection stages of a group between passes.
#define GM_STAGE_DONE 0u    // threshold_key and kept are final
#define GM_STAGE_REFINE 1u  // histogram the next digit of the keys in the bucket
#define GM_STAGE_MIN 2u     // the bucket holds exactly the remaining target: threshold = its min

#define GM_KEEP_NONE 0xffffffffu

// One selection group's device state and result (the host copies this array back as the stats).
struct GmGroup {
    unsigned long long len;         // selected entries (dense tensors excluded); set once
    unsigned long long target;      // entries to keep: len - floor(r * len)
    unsigned long long above;       // entries strictly above the bucket
    unsigned long long bucket;      // entries in the bucket
    unsigned long long kept;        // final kept count
    unsigned long long non_finite;  // Inf/NaN entries in the group
    unsigned long long cand_start;  // candidate range reserved for the group (when has_candidates)
    unsigned long long cand_count;  // candidates written so far
    double sum_sq;                  // sum of g^2 over the group
    unsigned int n_chunks;          // non-dense chunks of the group; set once
    unsigned int arrived;           // blocks finished in the current pass (last-block detection)
    unsigned int stage;             // GM_STAGE_*
    unsigned int prefix;            // digits chosen so far: key >> shift == prefix is the bucket
    unsigned int shift;
    unsigned int threshold_key;     // final threshold key (GM_KEEP_NONE: keep nothing)
    unsigned int min_key;           // running min for GM_STAGE_MIN
    unsigned int has_candidates;    // 1 when the bucket was compacted into the candidate buffer
};

// Step-wide totals and the candidate buffer's bookkeeping.
struct GmStep {
    double sum_sq;                  // sum of g^2 over every tensor, dense ones included
    unsigned long long non_finite;  // Inf/NaN entries anywhere: non-zero skips the optimizer step
    unsigned long long cand_used;   // candidate slots reserved this step
    unsigned long long cand_cap;    // capacity of the candidate buffer; set once
};

// One parameter tensor of the optimizer (kernels/adamw.cu): where its state lives. Built on the host
// when a step sees other parameter addresses, other frozen flags or new master weights.
struct GmParamTensor {
    unsigned long long d_param;   // device address of the tensor's first parameter (f32 or bf16)
    unsigned long long d_m;       // its first moment (f32); the optimizer's buffer, 16-byte aligned
    unsigned long long d_v;       // its second moment (f32), 16-byte aligned
    unsigned long long d_master;  // its f32 master weights (0 without), 16-byte aligned
    unsigned long long first;     // global index of its first entry (TensorTable::offsets)
    unsigned int frozen;          // 1: never updated (HFT's fixed freezing)
    unsigned int pad;
};

// The scalars of one AdamW step: src/adamw/math.rs StepScalars, field for field (passed by value;
// 9 floats, so 4-byte aligned like its Rust twin).
struct GmStepScalars {
    float grad_mul;         // clip_coef / grad_scale (replaced on the device when clipping)
    float beta1;
    float one_minus_beta1;
    float beta2;
    float one_minus_beta2;
    float decay;            // 1 - lr * weight_decay
    float step_size;        // lr / (1 - beta1^t)
    float inv_sqrt_bc2;     // 1 / sqrt(1 - beta2^t)
    float eps;
};

// Which entries the optimizer keeps (GmAdamWArgs.keep_rule); dense tensors always keep everything.
#define GM_KEEP_THRESHOLD 0u  // key(g) >= the group's threshold_key (GMT; key 0 after mask ratio 0)
#define GM_KEEP_RANDOM 1u     // rng draw(random_key, global index) >= random_cut

// The rest of one optimizer step's arguments (passed by value).
struct GmAdamWArgs {
    unsigned long long random_key;  // rng::stream(mask_seed, step), for GM_KEEP_RANDOM
    unsigned long long random_cut;  // rng::random_cut(mask_ratio), in [0, 2^32]
    unsigned long long round_key;   // rng::stream(seed ^ ROUNDING_DOMAIN, step), for stochastic rounding
    double max_grad_norm;           // with clip: grad_mul = min(1, max / (norm + 1e-6)) / grad_scale
    double grad_scale;              // 1 when the config has none
    unsigned int keep_rule;         // GM_KEEP_*
    unsigned int freeze;            // 1: MaskedUpdate::Freeze, 0: ZeroGrad
    unsigned int clip;              // 1: grad_mul comes from GmStep.sum_sq, on the device
    unsigned int init_master;       // 1: the master weights start as the bf16 parameters (first step)
};

// One candidate plan of an optimizer step: its scalars and arguments if it is the t-th step taken,
// t = base + 1 + the candidate's index (src/cuda/adamw/plan.rs). The step counter lives on the
// device (a skipped step, decided there, does not count), so the host, which does not wait for the
// skip flags of the steps before, sends one candidate per count they may have left, and
// gm_step_plan picks the one for the device's count.
struct GmStepPlan {
    GmStepScalars scalars;
    unsigned int missed;  // set in the picked copy only: the device's count was outside the window
    GmAdamWArgs args;
};

// The device's step counter (GmStepCount.taken, +1 per step taken) and the host's window misses.
struct GmStepCount {
    unsigned long long taken;
    unsigned long long missed;
};

static_assert(sizeof(GmChunk) == 32, "GmChunk layout is mirrored in src/cuda/types.rs");
static_assert(sizeof(GmGroup) == 104, "GmGroup layout is mirrored in src/cuda/types.rs");
static_assert(sizeof(GmStep) == 32, "GmStep layout is mirrored in src/cuda/types.rs");
static_assert(sizeof(GmParamTensor) == 48, "GmParamTensor layout is mirrored in src/cuda/types.rs");
static_assert(sizeof(GmStepScalars) == 36, "GmStepScalars layout is src/adamw/math.rs StepScalars");
static_assert(sizeof(GmAdamWArgs) == 56, "GmAdamWArgs layout is mirrored in src/cuda/types.rs");
static_assert(sizeof(GmStepPlan) == 96, "GmStepPlan layout is mirrored in src/cuda/types.rs");
static_assert(sizeof(GmStepCount) == 16, "GmStepCount layout is mirrored in src/cuda/types.rs");
