//! The CPU engine on candle's CPU storage: [`crate::GmtAdamW`] (or N sharded ranks of it, see
//! `ranks`) steps the vars in place.
//!
//! The gradients are read where candle left them (read guards on their storage); the vars are
//! written in their own buffers (the nested in-place ops of `access`). Nothing is copied: no host
//! copy of the weights to keep in sync and write back, no gradient buffer of our own.

use candle_core::{Storage, Tensor, Var};

use super::access::{with_vars, Elem, Lent};
use super::config::Config;
use super::ranks::HostRanks;
use super::{candle_err, var_err};
use crate::cuda::adamw::ranges::first_overlap;
use crate::{Result, StepReport, TensorTable, VarProblem};

pub(crate) struct HostEngine {
    pub(super) opt: HostRanks,
    pub(super) last: Option<StepReport>,
    /// Zeros for the vars without a gradient (the largest var's length), allocated on first use.
    zeros: Vec<u32>,
    /// This step's frozen flags: the config's, plus the vars without a gradient.
    frozen: Vec<bool>,
    addresses: (Vec<u64>, Vec<u64>),
    ranges: Vec<crate::cuda::adamw::ranges::Range>,
}

impl HostEngine {
    pub(super) fn new(table: TensorTable, config: &Config) -> Result<Self> {
        let n = table.len();
        let opt = HostRanks::new(table, config)?;
        Ok(HostEngine {
            opt,
            last: None,
            zeros: Vec::new(),
            frozen: vec![false; n],
            addresses: (vec![0; n], vec![0; n]),
            ranges: Vec::with_capacity(n),
        })
    }

    /// One step of the vars on `grads` (checked: each var's shape, dtype and device, contiguous);
    /// a var without a gradient is frozen for this step. A rejected step changes nothing.
    pub(super) fn step<T: Elem>(
        &mut self,
        vars: &[Var],
        names: &[String],
        grads: &[Option<Tensor>],
        fixed_frozen: &[bool],
        lr: f64,
    ) -> Result<()> {
        let lengths = self.opt.table().lengths().to_vec();
        let longest = lengths.iter().copied().max().unwrap_or(0);
        if grads.iter().any(Option::is_none) && self.zeros.len() < longest {
            self.zeros = vec![0; longest];
        }
        let zeros: &[T] = bytemuck::cast_slice::<u32, T>(&self.zeros);
        let guards: Vec<_> = grads
            .iter()
            .map(|g| g.as_ref().map(Tensor::storage_and_layout))
            .collect();
        let mut slices: Vec<&[T]> = Vec::with_capacity(grads.len());
        for (i, guard) in guards.iter().enumerate() {
            slices.push(match guard {
                Some((storage, layout)) => host_slice(storage, layout, &names[i])?,
                None => &zeros[..lengths[i]],
            });
        }
        for (i, var) in vars.iter().enumerate() {
            let (storage, layout) = var.storage_and_layout();
            self.addresses.0[i] = host_slice::<T>(&storage, layout, &names[i])?.as_ptr() as u64;
            self.addresses.1[i] = slices[i].as_ptr() as u64;
        }
        let (params, grad_addresses) = &self.addresses;
        let size = std::mem::size_of::<T>();
        if let Some(t) = first_overlap(
            params,
            grad_addresses,
            &lengths,
            (size, size),
            &mut self.ranges,
        ) {
            let other = "another var or a gradient".to_string();
            return Err(var_err(&names[t], VarProblem::Shared { other }));
        }
        for ((frozen, &fixed), grad) in self.frozen.iter_mut().zip(fixed_frozen).zip(grads) {
            *frozen = fixed || grad.is_none();
        }
        self.opt.set_frozen(&self.frozen)?;
        let opt = &mut self.opt;
        let report = with_vars::<T, _>(vars, |lent| {
            let params: Vec<&mut [T]> = lent
                .into_iter()
                .map(|l| match l {
                    Lent::Host(s) => s,
                    #[cfg(feature = "cuda")]
                    Lent::Device(_) => unreachable!("the host engine steps CPU vars"),
                })
                .collect();
            opt.step(params, &slices, lr)
        })
        .map_err(candle_err)??;
        self.last = Some(report);
        Ok(())
    }
}

/// The contiguous data of a tensor on the CPU, of element type `T`.
fn host_slice<'s, T: Elem>(
    storage: &'s Storage,
    layout: &candle_core::Layout,
    name: &str,
) -> Result<&'s [T]> {
    let data = match storage {
        Storage::Cpu(cpu) => cpu.as_slice::<T>().ok(),
        _ => None,
    };
    match (data, layout.contiguous_offsets()) {
        (Some(data), Some((start, end))) if end <= data.len() => Ok(&data[start..end]),
        _ => Err(var_err(
            name,
            VarProblem::Gradient {
                got: "not a contiguous CPU buffer of the var's dtype".to_string(),
                expected: "a contiguous CPU buffer".to_string(),
            },
        )),
    }
}
