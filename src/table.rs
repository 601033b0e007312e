//! `TensorTable`: the model's tensors (length, selection group, dense flag), validated once, and
//! `GroupMap`: the table's tensors resolved into selection groups for one [`Scope`].

use crate::{Error, Result, Scope};

/// The most entries a table may hold: the kept count `len - floor(mask_ratio * len)` is computed
/// in f64 (by the CPU engine and the kernels alike), where every length up to 2^53 is exact.
pub const MAX_ENTRIES: u64 = 1 << 53;

/// The tensors of a model, in a fixed order that every buffer list follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorTable {
    lengths: Vec<usize>,
    groups: Vec<u32>,
    dense: Vec<bool>,
    offsets: Vec<u64>,
}

impl TensorTable {
    /// A table of tensors with the given lengths and caller-defined group ids (used by
    /// [`Scope::Groups`]). Ids must be below the number of tensors; unused ids are empty groups.
    /// Zero-length tensors are allowed and ignored. Rejects more than `u32::MAX` tensors and more
    /// than [`MAX_ENTRIES`] entries in all.
    pub fn new(lengths: &[usize], groups: &[u32]) -> Result<Self> {
        if groups.len() != lengths.len() {
            return Err(Error::CountMismatch {
                what: "group ids",
                expected: lengths.len(),
                got: groups.len(),
            });
        }
        if u32::try_from(lengths.len()).is_err() {
            return Err(Error::TooLarge("more than u32::MAX tensors"));
        }
        if let Some((tensor, &group)) = groups
            .iter()
            .enumerate()
            .find(|(_, &g)| g as usize >= lengths.len())
        {
            return Err(Error::GroupOutOfRange {
                tensor,
                group,
                limit: lengths.len(),
            });
        }
        let mut offsets = Vec::with_capacity(lengths.len() + 1);
        let mut total = 0u64;
        offsets.push(0);
        for &len in lengths {
            total = total
                .checked_add(len as u64)
                .filter(|&total| total <= MAX_ENTRIES)
                .ok_or(Error::TooLarge(
                    "more than 2^53 entries (kept counts are computed in f64, exact up to 2^53)",
                ))?;
            offsets.push(total);
        }
        Ok(TensorTable {
            lengths: lengths.to_vec(),
            groups: groups.to_vec(),
            dense: vec![false; lengths.len()],
            offsets,
        })
    }

    /// A table where each tensor's group id is its index.
    pub fn per_tensor(lengths: &[usize]) -> Result<Self> {
        let groups: Vec<u32> = (0..lengths.len()).map(|i| i as u32).collect();
        Self::new(lengths, &groups)
    }

    /// Marks tensors as dense: never masked, still updated, not counted in any group's length.
    pub fn with_dense(mut self, dense: &[bool]) -> Result<Self> {
        self.check_count("dense flags", dense.len())?;
        self.dense.copy_from_slice(dense);
        Ok(self)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    /// True when the table has no tensors.
    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// Entries of each tensor.
    pub fn lengths(&self) -> &[usize] {
        &self.lengths
    }

    /// Caller-defined group id of each tensor.
    pub fn group_ids(&self) -> &[u32] {
        &self.groups
    }

    /// Dense flag of each tensor.
    pub fn dense(&self) -> &[bool] {
        &self.dense
    }

    /// Offset of each tensor's first entry in the concatenation of all tensors; one more entry at
    /// the end holds the total.
    pub fn offsets(&self) -> &[u64] {
        &self.offsets
    }

    /// Total entries over all tensors.
    pub fn total_len(&self) -> u64 {
        *self.offsets.last().unwrap_or(&0)
    }

    /// Checks that a per-tensor list (flags, buffers) has one entry per tensor; `what` names it.
    pub fn check_count(&self, what: &'static str, got: usize) -> Result<()> {
        if got == self.lengths.len() {
            Ok(())
        } else {
            Err(Error::CountMismatch {
                what,
                expected: self.lengths.len(),
                got,
            })
        }
    }

    /// Checks a list of buffer lengths against the table; `what` names the buffers in the error.
    pub fn check_lengths(
        &self,
        what: &'static str,
        got: impl ExactSizeIterator<Item = usize>,
    ) -> Result<()> {
        self.check_count(what, got.len())?;
        for (tensor, (got, &expected)) in got.zip(&self.lengths).enumerate() {
            if got != expected {
                return Err(Error::LengthMismatch {
                    tensor,
                    what,
                    expected,
                    got,
                });
            }
        }
        Ok(())
    }
}

/// The table's tensors resolved into selection groups for one scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMap {
    /// Selection group of each tensor.
    pub group_of: Vec<u32>,
    /// Selected (non-dense) entries in each group.
    pub group_len: Vec<u64>,
}

impl GroupMap {
    /// Resolves `scope` over `table`.
    pub fn new(table: &TensorTable, scope: Scope) -> Self {
        let group_of: Vec<u32> = match scope {
            Scope::PerTensor => (0..table.len() as u32).collect(),
            Scope::Global => vec![0; table.len()],
            Scope::Groups => table.group_ids().to_vec(),
        };
        let n_groups = match scope {
            Scope::Global => 1,
            _ => group_of.iter().map(|&g| g as usize + 1).max().unwrap_or(0),
        };
        let mut group_len = vec![0u64; n_groups];
        for (tensor, &group) in group_of.iter().enumerate() {
            if !table.dense()[tensor] {
                group_len[group as usize] += table.lengths()[tensor] as u64;
            }
        }
        GroupMap {
            group_of,
            group_len,
        }
    }

    /// Number of selection groups.
    pub fn n_groups(&self) -> usize {
        self.group_len.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_tables_are_rejected() {
        assert!(matches!(
            TensorTable::new(&[1, 2], &[0]),
            Err(Error::CountMismatch { .. })
        ));
        assert!(matches!(
            TensorTable::new(&[1, 2], &[0, 2]),
            Err(Error::GroupOutOfRange {
                tensor: 1,
                group: 2,
                limit: 2
            })
        ));
        let table = TensorTable::per_tensor(&[1, 2]).unwrap();
        assert!(matches!(
            table.with_dense(&[true]),
            Err(Error::CountMismatch { .. })
        ));
    }

    /// Lengths are counted in u64, but the kept target `len - floor(r * len)` goes through f64:
    /// past 2^53 entries `len as f64` rounds and ratio 1 would keep 1 entry instead of none. The
    /// table stops there (no memory is needed to build one).
    #[test]
    fn tables_stop_where_f64_counts_stop_being_exact() {
        let at_limit = TensorTable::new(&[1 << 52, 1 << 52], &[0, 0]).unwrap();
        assert_eq!(at_limit.total_len(), MAX_ENTRIES);
        let global = GroupMap::new(&at_limit, Scope::Global);
        assert_eq!(crate::config::kept_target(global.group_len[0], 1.0), 0);
        assert_eq!(crate::config::kept_target(MAX_ENTRIES + 1, 1.0), 1); // why the limit exists
        for lengths in [&[(1 << 53) + 1][..], &[1 << 53, 1], &[usize::MAX, 1]] {
            assert!(
                matches!(TensorTable::per_tensor(lengths), Err(Error::TooLarge(_))),
                "{lengths:?}"
            );
        }
    }

    #[test]
    fn groups_resolve_per_scope() {
        let table = TensorTable::new(&[4, 0, 3, 5], &[1, 1, 0, 1])
            .unwrap()
            .with_dense(&[false, false, false, true])
            .unwrap();
        assert_eq!(table.offsets(), &[0, 4, 4, 7, 12]);
        let per = GroupMap::new(&table, Scope::PerTensor);
        assert_eq!(per.group_len, vec![4, 0, 3, 0]);
        let global = GroupMap::new(&table, Scope::Global);
        assert_eq!(global.group_len, vec![7]);
        let custom = GroupMap::new(&table, Scope::Groups);
        assert_eq!(custom.group_of, vec![1, 1, 0, 1]);
        assert_eq!(custom.group_len, vec![3, 4]);
        assert_eq!(
            GroupMap::new(&TensorTable::per_tensor(&[]).unwrap(), Scope::Global).group_len,
            vec![0]
        );
    }

    #[test]
    fn check_lengths_names_the_tensor() {
        let table = TensorTable::per_tensor(&[2, 3]).unwrap();
        assert!(table
            .check_lengths("grads", [2usize, 3].into_iter())
            .is_ok());
        assert_eq!(
            table.check_lengths("grads", [2usize, 4].into_iter()),
            Err(Error::LengthMismatch {
                tensor: 1,
                what: "grads",
                expected: 3,
                got: 4
            })
        );
    }
}
