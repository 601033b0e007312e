//! `GmtAdamW` over candle vars: construction, the engine it drives, and what it tells.

use candle_core::{DType, Device, Tensor, Var};

use super::config::Config;
use super::host::HostEngine;
use super::var_err;
use super::vars::{check_device, check_distinct, check_dtype, Vars};
use crate::{
    AdamWConfig, Error, GroupMap, MaskConfig, Result, StepReport, TensorTable, VarProblem,
};

/// GMT with AdamW over candle vars: a [`candle_nn::Optimizer`]. See the [module notes](super).
pub struct GmtAdamW {
    pub(super) vars: Vec<Var>,
    pub(super) names: Vec<String>,
    pub(super) named: bool,
    pub(super) shapes: Vec<Vec<usize>>,
    pub(super) dtype: DType,
    pub(super) device: Device,
    pub(super) lr: f64,
    /// Selection group of each var under the scope in use.
    pub(super) group_of: Vec<u32>,
    /// Frozen by the config (fixed); a step adds the vars without a gradient.
    pub(super) frozen: Vec<bool>,
    /// The sum of the micro-batches' gradients since the last step (None: no gradient yet).
    pub(super) accumulated: Vec<Option<Tensor>>,
    pub(super) micro_batches: usize,
    pub(super) engine: Engine,
    /// Gradients copied to be made contiguous, since construction.
    pub(super) copies: u64,
    pub(super) shards: usize,
}

pub(super) enum Engine {
    Host(Box<HostEngine>),
    #[cfg(feature = "cuda")]
    Device(Box<super::device::DeviceEngine>),
}

impl GmtAdamW {
    /// An optimizer for `vars` (`&VarMap`, `(name, Var)` pairs or `varmap.all_vars()`: see
    /// [`Vars`]) with lr 1e-3 and the other defaults of [`Config::new`].
    pub fn new(vars: impl Into<Vars>, adamw: AdamWConfig, mask: MaskConfig) -> Result<Self> {
        Self::with_config(vars, Config::new(adamw, mask))
    }

    /// An optimizer for `vars` built with `config`. Rejects a bad AdamW or mask configuration, a
    /// var of another dtype than f32 or bf16 or than the first var's, vars on two devices, a var
    /// listed twice; on a CUDA device, also a build without kernels or a device that fails.
    pub fn with_config(vars: impl Into<Vars>, config: Config) -> Result<Self> {
        let Vars { list, named } = vars.into();
        config.adamw.validate()?;
        config.mask.validate()?;
        crate::adamw::config::validate_lr(config.lr)?;
        check_distinct(&list)?;
        let (device, dtype) = match list.first() {
            Some((_, v)) => (v.device().clone(), v.dtype()),
            None => (Device::Cpu, DType::F32),
        };
        for (name, var) in &list {
            check_dtype(name, var.dtype(), Some(dtype))?;
            check_device(name, var.as_tensor(), &device)?;
        }
        let names: Vec<String> = list.iter().map(|(n, _)| n.clone()).collect();
        let lengths: Vec<usize> = list.iter().map(|(_, v)| v.elem_count()).collect();
        let layers: Vec<Option<u32>> = names.iter().map(|n| (config.layer_of)(n)).collect();
        let ids = group_ids(&layers);
        let dense: Vec<bool> = names.iter().map(|n| (config.dense)(n)).collect();
        let frozen: Vec<bool> = names.iter().map(|n| (config.frozen)(n)).collect();
        let table = TensorTable::new(&lengths, &ids)?.with_dense(&dense)?;
        let group_of = GroupMap::new(&table, config.mask.scope).group_of;
        if config.shards != 1 && !device.is_cpu() {
            return Err(unsupported_device(
                &device,
                &names,
                "the CPU: sharded ranks (Config::with_shards) are threads on the CPU",
            ));
        }
        let engine = if device.is_cpu() {
            Engine::Host(Box::new(HostEngine::new(table, &config)?))
        } else {
            Self::device_engine(&device, table, &config, &names)?
        };
        let mut opt = GmtAdamW {
            shapes: list.iter().map(|(_, v)| v.dims().to_vec()).collect(),
            vars: list.into_iter().map(|(_, v)| v).collect(),
            accumulated: vec![None; names.len()],
            micro_batches: 0,
            named,
            dtype,
            device,
            lr: config.lr,
            group_of,
            frozen,
            engine,
            copies: 0,
            shards: config.shards,
            names,
        };
        if named {
            opt.set_engine_names()?;
        }
        Ok(opt)
    }

    #[cfg(feature = "cuda")]
    fn device_engine(
        device: &Device,
        table: TensorTable,
        config: &Config,
        names: &[String],
    ) -> Result<Engine> {
        match device {
            Device::Cuda(cuda) => Ok(Engine::Device(Box::new(super::device::DeviceEngine::new(
                cuda, table, config,
            )?))),
            other => Err(unsupported_device(other, names, ANY_DEVICE)),
        }
    }

    #[cfg(not(feature = "cuda"))]
    fn device_engine(
        device: &Device,
        _: TensorTable,
        _: &Config,
        names: &[String],
    ) -> Result<Engine> {
        Err(unsupported_device(device, names, ANY_DEVICE))
    }

    fn set_engine_names(&mut self) -> Result<()> {
        match &mut self.engine {
            Engine::Host(host) => host.opt.set_tensor_names(&self.names),
            #[cfg(feature = "cuda")]
            Engine::Device(device) => device.opt.set_tensor_names(&self.names),
        }
    }

    /// The vars' names, in stepping order (`#0`, `#1`, ... for unnamed vars).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The vars' device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The ranks the optimizer's state is sharded over (1: unsharded; [`Config::with_shards`]).
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The vars, in stepping order.
    pub fn vars(&self) -> &[Var] {
        &self.vars
    }

    /// The selection group of each var (an index into [`StepReport::groups`]), in stepping order.
    pub fn groups(&self) -> &[u32] {
        &self.group_of
    }

    /// The selection group of the var called `name`, an index into [`StepReport::groups`].
    pub fn group_of(&self, name: &str) -> Option<usize> {
        let i = self.names.iter().position(|n| n == name)?;
        Some(self.group_of[i] as usize)
    }

    /// The gradients accumulated since the last step, one per var in stepping order (None: no
    /// micro-batch gave the var a gradient yet). Clones share candle's storage: no copy.
    pub fn accumulated(&self) -> &[Option<Tensor>] {
        &self.accumulated
    }

    /// Turns mask-stability tracking on or off ([`crate::GmtAdamW::track_stability`] on the CPU,
    /// [`crate::cuda::CudaGmtAdamW::track_stability`] on a CUDA device: the same counts). Fails
    /// only on a CUDA device whose allocation or earlier step fails.
    pub fn track_stability(&mut self, on: bool) -> Result<()> {
        match &mut self.engine {
            Engine::Host(host) => host.opt.track_stability(on),
            #[cfg(feature = "cuda")]
            Engine::Device(device) => device.opt.track_stability(on)?,
        }
        Ok(())
    }

    /// The mask stability of the last step taken, when tracked. On a CUDA device this waits for
    /// that step's counts (as [`GmtAdamW::step_count`] waits for the step count).
    pub fn stability(&mut self) -> Result<Option<&crate::MaskStability>> {
        match &mut self.engine {
            Engine::Host(host) => Ok(host.opt.stability()),
            #[cfg(feature = "cuda")]
            Engine::Device(device) => device.opt.stability(),
        }
    }

    /// Micro-batches accumulated since the last step.
    pub fn micro_batches(&self) -> usize {
        self.micro_batches
    }

    /// Gradients the optimizer had to copy (to make them contiguous) since it was built: 0 for
    /// what candle's backward produces.
    pub fn copies(&self) -> u64 {
        self.copies
    }

    /// Steps taken (skipped steps, with an Inf or NaN gradient, do not count). On a CUDA device
    /// this waits for the last step's count.
    pub fn step_count(&mut self) -> Result<u64> {
        match &mut self.engine {
            Engine::Host(host) => Ok(host.opt.step_count()),
            #[cfg(feature = "cuda")]
            Engine::Device(device) => device.opt.step_count(),
        }
    }

    /// The report of the last step: per selection group threshold, kept and target counts, the
    /// gradient norm, whether it was skipped. On a CUDA device this waits for the stream.
    pub fn last_report(&mut self) -> Result<StepReport> {
        let none = Error::InvalidConfig {
            name: "last_report before a step",
            value: 0.0,
            expected: "take a step first",
        };
        match &mut self.engine {
            Engine::Host(host) => host.last.clone().ok_or(none),
            #[cfg(feature = "cuda")]
            Engine::Device(device) => device.opt.last_report(),
        }
    }

    /// The f32 master weights of bf16 vars, flat in stepping order, once a step has been taken.
    pub fn master_to_host(&mut self) -> Result<Option<Vec<f32>>> {
        match &mut self.engine {
            Engine::Host(host) => Ok(host.opt.master()),
            #[cfg(feature = "cuda")]
            Engine::Device(device) => device.opt.master_to_host(),
        }
    }

    /// The first and second moments, flat in stepping order.
    pub fn moments_to_host(&mut self) -> Result<(Vec<f32>, Vec<f32>)> {
        match &mut self.engine {
            Engine::Host(host) => Ok(host.opt.moments()),
            #[cfg(feature = "cuda")]
            Engine::Device(device) => device.opt.moments_to_host(),
        }
    }

    /// Checks that every var still has the shape it had when the optimizer was built.
    pub(super) fn check_shapes(&self) -> Result<()> {
        for ((name, var), shape) in self.names.iter().zip(&self.vars).zip(&self.shapes) {
            super::vars::check_shape(name, var, shape)?;
        }
        Ok(())
    }
}

/// Group ids from layers: the distinct values in order, `None` first, numbered from 0.
fn group_ids(layers: &[Option<u32>]) -> Vec<u32> {
    let mut distinct = layers.to_vec();
    distinct.sort();
    distinct.dedup();
    layers
        .iter()
        .map(|l| distinct.binary_search(l).expect("listed") as u32)
        .collect()
}

const ANY_DEVICE: &str = "the CPU, or a CUDA device in a build with the `cuda` feature";

fn unsupported_device(device: &Device, names: &[String], expected: &str) -> Error {
    var_err(
        names.first().map_or("", String::as_str),
        VarProblem::Device {
            got: format!("{:?}", device.location()),
            expected: expected.to_string(),
        },
    )
}
