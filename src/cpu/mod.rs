//! The CPU engine: exact selection with rayon. The oracle for the CUDA backend and the backend on
//! machines without a GPU.

mod pass1;
mod passes;
pub mod radix;
mod select;
mod shared;

pub(crate) use pass1::sum_sq_and_non_finite;
pub use select::CpuSelector;
