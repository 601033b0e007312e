// Structs shared by the kernels and the host. Mirrored by src/cuda/types.rs (#[repr(C)]);
// both sides assert the sizes. Keep every field naturally aligned and the structs padded to 8 bytes.
#pragma once
#include <cstdint>

// One entry of the work list: a run of at most GM_CHUNK_LEN entries of one tensor. Built once on
// the host (and again only when a buffer moves), uploaded, then read by every pass.
struct GmChunk {
    unsigned long long d_data;  // device address of the chunk's first gradient entry
    unsigned long long first;   // index of that entry in the concatenation of all tensors
    unsigned int len;           // entries in this chunk
    unsigned int group;         // selection group of its tensor
    unsigned int dense;         // 1: never masked; counted in the step totals only
    unsigned int tensor;        // tensor index in the table
};

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

static_assert(sizeof(GmChunk) == 32, "GmChunk layout is mirrored in src/cuda/types.rs");
static_assert(sizeof(GmGroup) == 104, "GmGroup layout is mirrored in src/cuda/types.rs");
static_assert(sizeof(GmStep) == 32, "GmStep layout is mirrored in src/cuda/types.rs");
