//! Saving and loading the optimizer's state as safetensors.
//!
//! Tensors, all f32 of shape `[len]`, one per table tensor `t`: `m.{t}`, `v.{t}` and, with master
//! weights, `master.{t}` (a sharded rank: its slice of each, `len` its slice's length). Metadata
//! (strings): `format` (`gradmask-adamw-v1`), `step`, `precision` (`none` or a [`Precision`]
//! name), `mask_mode` (`gmt` or `random`), `mask_seed`, `fingerprint` (of the table: lengths,
//! group ids, dense flags), `shard` (`none`, or `{rank}/{world}/{layout fingerprint}`: a rank
//! loads only its own file) and `checksum` (of every tensor's bytes, in the order above, then of
//! `"{step}|{precision}|{mask_mode}|{mask_seed}"`, followed by `"|{tensor_names}"` when there are
//! names), both as 16 hex digits; and `tensor_names` (the tensors' names joined by newlines), when
//! the optimizer was given names ([`GmtAdamW::set_tensor_names`]). A load into an optimizer with
//! names rejects a file whose names differ ([`VarProblem::Checkpoint`], naming the first var that
//! differs).
//!
//! The stochastic-rounding seed is an argument of each `step_bf16_stochastic` call, not state: the
//! caller passes the same seed after a resume. The parameters themselves are the caller's to save.
//!
//! A save writes a temporary file beside the target, fsyncs it, renames it over the target and
//! fsyncs the directory, so a crash leaves the old checkpoint or the new one. A load reads and
//! checks everything (format, fingerprint, names, shapes, dtypes, checksum) before it changes any
//! state, so a failed load changes nothing.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use rayon::prelude::*;
use safetensors::tensor::{Dtype, SafeTensors, View};

use super::config::MaskMode;
use super::optimizer::{GmtAdamW, Precision};
use crate::rng::{fmix, splitmix};
use crate::{Error, Result, TensorTable, VarProblem};

const FORMAT: &str = "gradmask-adamw-v1";

// The tensors are written and read as the in-memory bytes of f32 slices; safetensors is
// little-endian.
const _: () = assert!(
    cfg!(target_endian = "little"),
    "checkpoints assume a little-endian host"
);

/// A 64-bit fingerprint of a table: its lengths, group ids and dense flags.
pub fn table_fingerprint(table: &TensorTable) -> u64 {
    let mut h = splitmix(table.len() as u64);
    for t in 0..table.len() {
        h = splitmix(h ^ table.lengths()[t] as u64);
        h = splitmix(h ^ u64::from(table.group_ids()[t]) ^ (u64::from(table.dense()[t]) << 32));
    }
    h
}

/// A non-cryptographic 64-bit checksum of `bytes` (xxHash64-style rounds on four lanes).
fn checksum(bytes: &[u8]) -> u64 {
    const P1: u64 = 0x9E37_79B1_85EB_CA87;
    const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    let mut lanes = [P1.wrapping_add(P2), P2, 0, P1.wrapping_neg()];
    let mut blocks = bytes.chunks_exact(32);
    for block in &mut blocks {
        for (lane, word) in lanes.iter_mut().zip(block.chunks_exact(8)) {
            let w = u64::from_le_bytes(word.try_into().expect("8 bytes"));
            *lane = lane
                .wrapping_add(w.wrapping_mul(P2))
                .rotate_left(31)
                .wrapping_mul(P1);
        }
    }
    let mut h = fmix(bytes.len() as u64);
    for lane in lanes {
        h = fmix(h ^ lane);
    }
    for &b in blocks.remainder() {
        h = fmix(h ^ u64::from(b));
    }
    h
}

/// Combines the per-tensor checksums in order with the checksum of the scalar state.
fn combine(parts: &[u64], step: u64, precision: &str, mode: &str, seed: u64, names: &str) -> u64 {
    let mut scalars = format!("{step}|{precision}|{mode}|{seed}");
    if !names.is_empty() {
        scalars = format!("{scalars}|{names}");
    }
    parts
        .iter()
        .chain([&checksum(scalars.as_bytes())])
        .fold(0, |acc, part| splitmix(acc ^ part))
}

/// `names` joined by newlines, after checking their count against `table` and that none holds a
/// newline.
pub(crate) fn join_names(table: &TensorTable, names: &[String]) -> Result<String> {
    table.check_count("tensor names", names.len())?;
    if let Some(t) = names.iter().position(|n| n.contains('\n')) {
        return Err(Error::InvalidConfig {
            name: "tensor name",
            value: t as f64,
            expected: "a name without a newline (the value is the tensor index)",
        });
    }
    Ok(names.join("\n"))
}

/// An f32 slice as a safetensors view.
struct F32View<'a> {
    data: &'a [f32],
    shape: [usize; 1],
}

impl View for &F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(bytemuck::cast_slice(self.data))
    }
    fn data_len(&self) -> usize {
        std::mem::size_of_val(self.data)
    }
}

fn fail(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

impl GmtAdamW {
    /// Names the tensors (in table order) for checkpoints: a save records them and a load checks
    /// them. Rejects a count mismatch and a name with a newline; changes nothing then.
    pub fn set_tensor_names(&mut self, names: &[String]) -> Result<()> {
        self.names = join_names(&self.table, names)?;
        Ok(())
    }

    /// The checkpoint's `shard` metadata: `none`, or `{rank}/{world}/{layout fingerprint}`.
    fn shard_label(&self) -> String {
        match self.shard_layout() {
            None => "none".into(),
            Some(l) => format!("{}/{}/{:016x}", l.rank(), l.world(), l.fingerprint()),
        }
    }

    /// The checkpoint's tensor names and the state slices they hold, in checksum order.
    fn state_slices(&self) -> Vec<(String, &[f32])> {
        let with_master = self.precision == Some(Precision::Bf16Master);
        let mut out = Vec::new();
        for (t, &len) in self.local.lengths().iter().enumerate() {
            let at = self.local.offsets()[t] as usize;
            out.push((format!("m.{t}"), &self.m[at..][..len]));
            out.push((format!("v.{t}"), &self.v[at..][..len]));
            if with_master {
                out.push((format!("master.{t}"), &self.master[at..][..len]));
            }
        }
        out
    }

    /// Writes the state (m, v, master weights, step, mask mode and seed, table fingerprint) to
    /// `path` atomically: a temporary file beside it, fsync, rename, fsync of the directory.
    pub fn save(&self, path: &Path) -> Result<()> {
        let slices = self.state_slices();
        let sums: Vec<u64> = slices
            .par_iter()
            .map(|(_, s)| checksum(bytemuck::cast_slice(s)))
            .collect();
        let (mode, seed) = match self.mode {
            MaskMode::Gmt => ("gmt", 0),
            MaskMode::Random { seed } => ("random", seed),
        };
        let precision = self.precision.map_or("none", Precision::name);
        let metadata: HashMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("step", self.step.to_string()),
            ("precision", precision.to_string()),
            ("mask_mode", mode.to_string()),
            ("mask_seed", seed.to_string()),
            (
                "fingerprint",
                format!("{:016x}", table_fingerprint(&self.table)),
            ),
            ("shard", self.shard_label()),
            (
                "checksum",
                format!(
                    "{:016x}",
                    combine(&sums, self.step, precision, mode, seed, &self.names)
                ),
            ),
        ]
        .into_iter()
        .chain((!self.names.is_empty()).then(|| ("tensor_names", self.names.clone())))
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let views: Vec<(String, F32View)> = slices
            .into_iter()
            .map(|(name, data)| {
                let shape = [data.len()];
                (name, F32View { data, shape })
            })
            .collect();
        let file_name = path
            .file_name()
            .ok_or_else(|| fail(path, "not a file path"))?;
        let tmp = path.with_file_name(format!(
            ".{}.tmp-{}",
            file_name.to_string_lossy(),
            std::process::id()
        ));
        let written = (|| -> std::result::Result<(), String> {
            safetensors::serialize_to_file(
                views.iter().map(|(n, v)| (n.as_str(), v)),
                Some(metadata),
                &tmp,
            )
            .map_err(|e| e.to_string())?;
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(|e| format!("fsync: {e}"))?;
            std::fs::rename(&tmp, path).map_err(|e| format!("rename: {e}"))
        })();
        if let Err(reason) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(fail(path, reason));
        }
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        std::fs::File::open(dir.unwrap_or(Path::new(".")))
            .and_then(|d| d.sync_all())
            .map_err(|e| fail(path, format!("fsync of the directory: {e}")))
    }

    /// Restores the state saved by [`GmtAdamW::save`]: m, v, master weights, step counter,
    /// precision, and the mask mode with its seed. Fails with [`Error::Checkpoint`] for a file of
    /// another table, or a truncated or corrupt one; a failed load changes nothing.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|e| fail(path, e))?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| fail(path, e))?;
        let file = SafeTensors::deserialize(&bytes).map_err(|e| fail(path, e))?;
        let empty = HashMap::new();
        let meta = header.metadata().as_ref().unwrap_or(&empty);
        let get = |key: &str| {
            meta.get(key)
                .map(String::as_str)
                .ok_or_else(|| fail(path, format!("metadata has no {key}")))
        };
        let hex = |key: &str| {
            u64::from_str_radix(get(key)?, 16).map_err(|_| fail(path, format!("bad {key}")))
        };
        let int = |key: &str| {
            get(key)?
                .parse::<u64>()
                .map_err(|_| fail(path, format!("bad {key}")))
        };
        if get("format")? != FORMAT {
            return Err(fail(path, format!("not a {FORMAT} checkpoint")));
        }
        let names = meta.get("tensor_names").map_or("", String::as_str);
        if !self.names.is_empty() && !names.is_empty() && names != self.names {
            let mut theirs = names.split('\n');
            let (var, found) = self
                .names
                .split('\n')
                .map(|mine| (mine, theirs.next().unwrap_or("nothing")))
                .find(|(mine, found)| mine != found)
                .unwrap_or(("(past the last)", "more vars"));
            return Err(Error::Var {
                var: var.to_string(),
                problem: VarProblem::Checkpoint {
                    path: path.display().to_string(),
                    found: found.to_string(),
                },
            });
        }
        if hex("fingerprint")? != table_fingerprint(&self.table) {
            return Err(fail(path, "the checkpoint is for another tensor table"));
        }
        // Files written before sharding existed have no `shard`: they are unsharded ones.
        let shard = meta.get("shard").map_or("none", String::as_str);
        if shard != self.shard_label() {
            let want = self.shard_label();
            return Err(fail(
                path,
                format!("the checkpoint is of shard {shard}, not {want}"),
            ));
        }
        let step = int("step")?;
        let (precision_name, mode_name, seed) =
            (get("precision")?, get("mask_mode")?, int("mask_seed")?);
        let precision = match precision_name {
            "none" => None,
            name => Some(Precision::from_name(name).ok_or_else(|| fail(path, "bad precision"))?),
        };
        let mode = match (mode_name, seed) {
            ("gmt", _) => MaskMode::Gmt,
            ("random", seed) => MaskMode::Random { seed },
            _ => return Err(fail(path, "bad mask_mode")),
        };
        let with_master = precision == Some(Precision::Bf16Master);
        let per_tensor = if with_master { 3 } else { 2 };
        let table = &self.local; // this rank's slices (the table itself, unsharded)
        if file.len() != per_tensor * table.len() {
            return Err(fail(
                path,
                format!(
                    "{} tensors, expected {}",
                    file.len(),
                    per_tensor * table.len()
                ),
            ));
        }
        let mut found = Vec::with_capacity(file.len());
        for (t, &len) in table.lengths().iter().enumerate() {
            for kind in ["m", "v", "master"].iter().take(per_tensor) {
                let name = format!("{kind}.{t}");
                let view = file.tensor(&name).map_err(|e| fail(path, e))?;
                if view.dtype() != Dtype::F32 || view.shape() != [len] {
                    return Err(fail(path, format!("{name}: expected F32 [{len}]")));
                }
                found.push(view.data());
            }
        }
        let sums: Vec<u64> = found.par_iter().map(|d| checksum(d)).collect();
        if combine(&sums, step, precision_name, mode_name, seed, names) != hex("checksum")? {
            return Err(fail(path, "checksum mismatch: the file is corrupt"));
        }

        // Everything checked: commit.
        if with_master && self.master.len() != self.m.len() {
            self.master = vec![0.0; self.m.len()];
        }
        for (t, data) in found.chunks(per_tensor).enumerate() {
            let range = self.local.offsets()[t] as usize..self.local.offsets()[t + 1] as usize;
            let mut targets = vec![&mut self.m[range.clone()], &mut self.v[range.clone()]];
            if with_master {
                targets.push(&mut self.master[range]);
            }
            for (dst, src) in targets.into_iter().zip(data) {
                bytemuck::cast_slice_mut::<f32, u8>(dst).copy_from_slice(src);
            }
        }
        self.step = step;
        self.precision = precision;
        self.set_mode(mode);
        if let Some(tracker) = &mut self.stability {
            tracker.forget(); // the checkpoint holds no mask to compare the next step with
        }
        Ok(())
    }
}
