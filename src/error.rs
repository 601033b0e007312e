//! The crate's one error type. Every public entry point that takes user input returns it instead of
//! panicking, and a rejected call modifies nothing.

use crate::DType;

/// Everything that can go wrong in a gradmask call.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// Two lists that must be parallel have different lengths (tensor lengths and group ids, ...).
    #[error("{what}: expected {expected} entries, got {got}")]
    CountMismatch {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A buffer's length differs from the length its tensor has in the table.
    #[error("tensor {tensor}: {what} has {got} entries, the table says {expected}")]
    LengthMismatch {
        tensor: usize,
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A selection group id is not below the number of tensors in the table.
    #[error("tensor {tensor}: group id {group} is out of range (must be < {limit})")]
    GroupOutOfRange {
        tensor: usize,
        group: u32,
        limit: usize,
    },
    /// The table has more tensors than group ids can name, or more entries than kept counts can
    /// be computed for exactly ([`MAX_ENTRIES`](crate::table::MAX_ENTRIES)); or a workspace would
    /// be larger than its counters can address.
    #[error("the table is too large: {0}")]
    TooLarge(&'static str),
    /// A configuration value is outside its domain (mask ratio outside [0, 1] or NaN, ...).
    #[error("invalid {name} = {value}: {expected}")]
    InvalidConfig {
        name: &'static str,
        value: f64,
        expected: &'static str,
    },
    /// A value inside its domain as given (f64) that the f32 arithmetic of the update cannot use:
    /// it rounds to 0 or a subnormal, overflows to Inf, or (a beta) rounds to 1. `name` is the
    /// hyper-parameter, or the f32 scalar derived from it (`"lr / (1 - beta1^t)"`), and `value`
    /// and `value_f32` are that quantity before and after the conversion.
    #[error(
        "invalid {name} = {value:e}: {value_f32:e} in f32, the precision of the update; {expected}"
    )]
    InvalidInF32 {
        name: &'static str,
        value: f64,
        value_f32: f32,
        expected: &'static str,
    },
    /// Buffers of another element type than the one this object was built for.
    #[error("dtype mismatch: expected {expected:?}, got {got:?}")]
    DTypeMismatch { expected: DType, got: DType },
    /// A step of another parameter precision than the one this optimizer's state was built with
    /// (f32, bf16 with master weights, bf16 with stochastic rounding).
    #[error("precision mismatch: the optimizer holds {expected} state, the step is {got}")]
    PrecisionMismatch {
        expected: &'static str,
        got: &'static str,
    },
    /// No CUDA driver library could be loaded on this machine.
    #[error("no CUDA driver (libcuda) was found on this machine")]
    NoDriver,
    /// The driver loaded but the requested device does not exist.
    #[error("no CUDA device {ordinal}: {reason}")]
    NoDevice { ordinal: usize, reason: String },
    /// The crate was built without nvcc, so it carries no kernels.
    #[error(
        "gradmask was built without CUDA kernels: install the pinned nvcc with scripts/install-cuda.sh, \
         set CUDA_HOME to the path it prints, and rebuild (or set GRADMASK_PREBUILT_KERNELS)"
    )]
    KernelsNotBuilt,
    /// A device buffer lives on another device than the selector's stream.
    #[error("buffer for tensor {tensor} is on device {got}, the stream is on device {expected}")]
    WrongDevice {
        tensor: usize,
        expected: usize,
        got: usize,
    },
    /// A CUDA driver call failed.
    #[error("CUDA error: {0}")]
    Cuda(String),
    /// A checkpoint could not be read or written, or does not belong to this table.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: String, reason: String },
    /// A candle var (or its gradient) that `gradmask::candle` cannot step; `var` is its name.
    #[error("var {var}: {problem}")]
    Var { var: String, problem: VarProblem },
    /// A candle operation of `gradmask::candle` failed (candle's message).
    #[error("candle: {0}")]
    Candle(String),
    /// A shard layout that does not cover every tensor exactly once across the ranks (an overlap,
    /// a gap, a range past the tensor's end), or a rank outside the world.
    #[error("shard layout: {0}")]
    ShardLayout(String),
    /// The ranks of a sharded selector or optimizer disagree on what must be the same on all of
    /// them (the table, scope, layout and configuration at construction; the mask ratio, dtype,
    /// precision or step at a call). Every rank returns this error, and nothing changes.
    #[error("the ranks disagree on {what}")]
    ShardMismatch { what: &'static str },
    /// A collective (all-reduce) failed: a rank left, buffers of different lengths, or the
    /// library's own error.
    #[error("collective: {0}")]
    Collective(String),
}

/// What is wrong with a candle var or its gradient ([`Error::Var`]).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VarProblem {
    /// The var's dtype is neither f32 nor bf16, or differs from the other vars' (one optimizer
    /// steps one precision).
    #[error("dtype {got} is not supported here: expected {expected}")]
    DType { got: String, expected: String },
    /// The var lives on another device than the first var.
    #[error("on device {got}, the first var is on {expected}")]
    Device { got: String, expected: String },
    /// The var's shape is not the one it had when the optimizer was built.
    #[error("shape {got:?}, the optimizer was built for {expected:?}")]
    ShapeChanged {
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// Its gradient has another shape, dtype or device than the var.
    #[error("gradient {got}, expected {expected}")]
    Gradient { got: String, expected: String },
    /// The var is listed twice, or shares memory with another var or with a gradient.
    #[error("shares its storage with {other}")]
    Shared { other: String },
    /// A checkpoint written for other vars: it holds `found` where this optimizer has the var.
    #[error("the checkpoint {path} holds `{found}` in its place")]
    Checkpoint { path: String, found: String },
    /// Used from another thread than the one that built the optimizer, on candle's per-thread
    /// CUDA stream (work on another thread's stream would not be ordered after candle's).
    #[error(
        "the optimizer must be used on the thread that built it (candle's per-thread CUDA stream)"
    )]
    Thread,
}

/// Shorthand used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
