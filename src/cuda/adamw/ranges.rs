//! The overlap check of `step_raw_async`: the parameter buffers it writes must not overlap one
//! another or any gradient buffer (gradients are only read, so they may share memory).

/// One non-empty buffer: `[start, end)` in bytes, and its tensor.
pub(crate) type Range = (u64, u64, usize);

/// The first tensor found whose buffer breaks the rule: a parameter range overlapping another
/// parameter range or a gradient range, or a range whose end overflows. Empty tensors take no
/// memory and never overlap. `scratch` is reused storage (no allocation once it is large enough).
pub(crate) fn first_overlap(
    params: &[u64],
    grads: &[u64],
    lengths: &[usize],
    sizes: (usize, usize),
    scratch: &mut Vec<Range>,
) -> Option<usize> {
    let range = |start: u64, len: usize, size: usize| {
        let bytes = (len as u64).checked_mul(size as u64)?;
        Some((start, start.checked_add(bytes)?))
    };
    scratch.clear();
    for (tensor, (&start, &len)) in params.iter().zip(lengths).enumerate() {
        if len > 0 {
            let Some((start, end)) = range(start, len, sizes.0) else {
                return Some(tensor);
            };
            scratch.push((start, end, tensor));
        }
    }
    scratch.sort_unstable();
    // Sorted by start and pairwise disjoint, the ranges' ends are sorted too.
    if let Some(pair) = scratch.windows(2).find(|pair| pair[1].0 < pair[0].1) {
        return Some(pair[1].2);
    }
    for (tensor, (&start, &len)) in grads.iter().zip(lengths).enumerate() {
        if len == 0 {
            continue;
        }
        let Some((start, end)) = range(start, len, sizes.1) else {
            return Some(tensor);
        };
        // Of the parameters starting before `end`, the last one reaches furthest.
        let before = scratch.partition_point(|p| p.0 < end);
        if before > 0 && scratch[before - 1].1 > start {
            return Some(scratch[before - 1].2);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(params: &[u64], grads: &[u64], lengths: &[usize]) -> Option<usize> {
        first_overlap(params, grads, lengths, (4, 2), &mut Vec::new())
    }

    #[test]
    fn disjoint_buffers_pass() {
        // f32 params of 4, 1, 0 entries; bf16 grads; the grads share memory with each other.
        let lengths = [4, 1, 0];
        assert_eq!(check(&[1000, 1016, 1016], &[2000, 2000, 0], &lengths), None);
        // Touching ends do not overlap.
        assert_eq!(check(&[1000, 1016, 0], &[1020, 1030, 0], &lengths), None);
    }

    #[test]
    fn overlaps_are_found() {
        let lengths = [4, 1, 3];
        // Parameter 1 starts inside parameter 0 (16 bytes from 1000).
        assert_eq!(
            check(&[1000, 1012, 5000], &[2000, 3000, 4000], &lengths),
            Some(1)
        );
        // Listed in the other order (parameter 1 first in memory, [1000, 1016) with 4 entries).
        assert_eq!(
            check(&[1012, 1000, 5000], &[2000, 3000, 4000], &[4, 4, 3]),
            Some(0)
        );
        // Gradient 2 (6 bytes from 4998) runs into parameter 2.
        assert_eq!(
            check(&[1000, 1016, 5000], &[2000, 3000, 4998], &lengths),
            Some(2)
        );
        // Gradient 2 ([1010, 1070)) covers parameter 1 and overlaps parameter 0: the parameter
        // starting last before its end is the one reported.
        assert_eq!(
            check(&[1000, 1016, 5000], &[2000, 3000, 1010], &[4, 1, 30]),
            Some(1)
        );
        // An end past u64::MAX.
        assert_eq!(
            check(&[u64::MAX - 8, 1016, 5000], &[2000, 3000, 4000], &lengths),
            Some(0)
        );
    }
}
