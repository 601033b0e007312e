//! One invocation of the trainer: the process set-up (`cpu`: FTZ/DAZ, threads, allocator), the
//! model, data and folders from the options (`setup`), the runs it asks for (`plan`: `--seeds`,
//! `--sweep-mask-ratio`), running them on one loaded model and data set (`runs`, one run in
//! `run_one`), and what a finished invocation writes (`outputs`).

pub mod cpu;
pub mod outputs;
pub mod plan;
mod run_one;
pub mod runs;
pub mod setup;

pub use run_one::run_method;
