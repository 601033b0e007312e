//! `Vars`: the vars an optimizer steps, with their names, and the checks on them and on their
//! gradients.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use super::var_err;
use crate::{Result, VarProblem};

/// The vars given to [`GmtAdamW::new`](super::GmtAdamW::new), in stepping order, with names.
pub struct Vars {
    pub(super) list: Vec<(String, Var)>,
    /// False for `Vec<Var>` (`VarMap::all_vars()`): positional names, no checkpoints.
    pub(super) named: bool,
}

impl From<Vec<Var>> for Vars {
    /// Unnamed vars, called `#0`, `#1`, ... in the given order.
    fn from(vars: Vec<Var>) -> Self {
        let list = vars
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("#{i}"), v))
            .collect();
        Vars { list, named: false }
    }
}

impl From<Vec<(String, Var)>> for Vars {
    /// Named vars, in the given order.
    fn from(list: Vec<(String, Var)>) -> Self {
        Vars { list, named: true }
    }
}

impl From<&VarMap> for Vars {
    /// A VarMap's vars, named and sorted by name (a stable order across processes).
    fn from(varmap: &VarMap) -> Self {
        let data = varmap.data().lock().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<(String, Var)> =
            data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        Vars { list, named: true }
    }
}

/// The dtypes the optimizer steps.
pub(super) fn check_dtype(name: &str, dtype: DType, expected: Option<DType>) -> Result<()> {
    let supported = matches!(dtype, DType::F32 | DType::BF16);
    match expected {
        Some(e) if e != dtype => Err(var_err(
            name,
            VarProblem::DType {
                got: dtype.as_str().to_string(),
                expected: format!("{} (the first var's)", e.as_str()),
            },
        )),
        _ if !supported => Err(var_err(
            name,
            VarProblem::DType {
                got: dtype.as_str().to_string(),
                expected: "f32, or bf16 (with f32 master weights)".to_string(),
            },
        )),
        _ => Ok(()),
    }
}

/// Rejects a var on another device than `device`.
pub(super) fn check_device(name: &str, var: &Tensor, device: &Device) -> Result<()> {
    if var.device().same_device(device) {
        Ok(())
    } else {
        Err(var_err(
            name,
            VarProblem::Device {
                got: format!("{:?}", var.device().location()),
                expected: format!("{:?}", device.location()),
            },
        ))
    }
}

/// Rejects a var whose shape is no longer `shape`.
pub(super) fn check_shape(name: &str, var: &Var, shape: &[usize]) -> Result<()> {
    if var.dims() == shape {
        Ok(())
    } else {
        Err(var_err(
            name,
            VarProblem::ShapeChanged {
                expected: shape.to_vec(),
                got: var.dims().to_vec(),
            },
        ))
    }
}

/// Rejects a gradient of another shape, dtype or device than its var's.
pub(super) fn check_grad(name: &str, var: &Var, grad: &Tensor) -> Result<()> {
    let same = grad.dims() == var.dims()
        && grad.dtype() == var.dtype()
        && grad.device().same_device(var.device());
    if same {
        return Ok(());
    }
    let describe = |t: &Tensor| {
        format!(
            "{:?} {} on {:?}",
            t.dims(),
            t.dtype().as_str(),
            t.device().location()
        )
    };
    Err(var_err(
        name,
        VarProblem::Gradient {
            got: describe(grad),
            expected: describe(var.as_tensor()),
        },
    ))
}

/// Rejects a var listed twice (the same tensor id) or names given twice; names the second one.
pub(super) fn check_distinct(list: &[(String, Var)]) -> Result<()> {
    let mut seen = std::collections::HashMap::with_capacity(list.len());
    for (i, (name, var)) in list.iter().enumerate() {
        if let Some(first) = seen.insert(var.id(), i) {
            let other = list[first].0.clone();
            return Err(var_err(name, VarProblem::Shared { other }));
        }
    }
    let mut names: Vec<(&str, usize)> = list
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.as_str(), i))
        .collect();
    names.sort();
    if let Some(pair) = names.windows(2).find(|p| p[0].0 == p[1].0) {
        return Err(var_err(
            pair[0].0,
            VarProblem::Shared {
                other: "another var of the same name".to_string(),
            },
        ));
    }
    Ok(())
}
