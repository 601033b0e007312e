//! The CPU engine: exact selection with rayon. The oracle for the CUDA backend and the backend on
//! machines without a GPU.

pub(crate) mod exact_sum;
mod pass1;
mod passes;
pub mod radix;
mod select;
mod sharded;
mod sharded_refine;
mod shared;

pub(crate) use pass1::{leaf_sum, sum_sq_and_non_finite};
pub use select::CpuSelector;
pub(crate) use sharded::{dtype_code, fingerprint as sharded_fingerprint, HEADER_NAMES};
