//! The ranks of one stand-in communicator meeting for each all-reduce (see `nccl/mod.rs`).

use std::ffi::c_int;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::{Comm, INVALID_ARGUMENT, INVALID_USAGE, REMOTE_ERROR, SUM};

/// (count, datatype, op) of one rank's call.
type Signature = (usize, c_int, c_int);

/// The call in progress: every rank's signature and bytes, then the result all of them read.
#[derive(Default)]
struct Round {
    generation: u64,
    arrived: usize,
    /// Ranks that have not yet read the finished round's result.
    leaving: usize,
    signatures: Vec<Option<Signature>>,
    parts: Vec<Vec<u8>>,
    result: Option<Result<Vec<u8>, c_int>>,
    broken: bool,
}

pub(super) struct Group {
    pub world: usize,
    round: Mutex<Round>,
    changed: Condvar,
}

pub(super) fn new_group(world: usize) -> Arc<Group> {
    Arc::new(Group {
        world,
        round: Mutex::new(Round {
            signatures: vec![None; world],
            parts: vec![Vec::new(); world],
            ..Round::default()
        }),
        changed: Condvar::new(),
    })
}

/// Bytes per element of an `ncclDataType_t` the stand-in sums: the integers (wrapping), f32 and
/// f64. Half types are refused.
pub(super) fn elem_size(datatype: c_int) -> Option<usize> {
    match datatype {
        0 | 1 => Some(1),
        2 | 3 => Some(4),
        4 | 5 => Some(8),
        7 => Some(4),
        8 => Some(8),
        _ => None,
    }
}

impl Group {
    fn lock(&self) -> MutexGuard<'_, Round> {
        self.round.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, Round>) -> MutexGuard<'a, Round> {
        self.changed.wait(guard).unwrap_or_else(|e| e.into_inner())
    }

    /// A rank left (destroy or abort): every call waiting now or made later fails.
    pub fn leave(&self) {
        self.lock().broken = true;
        self.changed.notify_all();
    }
}

/// Waits for every rank's call and returns the sum, in rank order, of their bytes.
pub(super) fn rendezvous(
    comm: &Comm,
    signature: Signature,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, c_int> {
    let group = &comm.group;
    let mut round = group.lock();
    while round.leaving > 0 && !round.broken {
        round = group.wait(round);
    }
    if round.broken {
        return Err(REMOTE_ERROR);
    }
    round.parts[comm.rank] = bytes;
    round.signatures[comm.rank] = Some(signature);
    round.arrived += 1;
    let generation = round.generation;
    if round.arrived == group.world {
        let result = sum(&round.signatures, &round.parts);
        round.result = Some(result);
        round.signatures.fill(None);
        round.arrived = 0;
        round.leaving = group.world;
        round.generation += 1;
        group.changed.notify_all();
    } else {
        while round.generation == generation && !round.broken {
            round = group.wait(round);
        }
        if round.generation == generation {
            return Err(REMOTE_ERROR);
        }
    }
    let outcome = round.result.clone().expect("a finished round");
    round.leaving -= 1;
    if round.leaving == 0 {
        group.changed.notify_all();
    }
    outcome
}

/// The element-wise sum of `parts` in rank order, if every rank made the same call.
fn sum(signatures: &[Option<Signature>], parts: &[Vec<u8>]) -> Result<Vec<u8>, c_int> {
    let first = signatures[0].expect("every rank arrived");
    if signatures.iter().any(|s| *s != Some(first)) {
        return Err(INVALID_USAGE);
    }
    let (_, datatype, op) = first;
    if op != SUM {
        return Err(INVALID_ARGUMENT);
    }
    let size = elem_size(datatype).ok_or(INVALID_ARGUMENT)?;
    let mut out = parts[0].clone();
    for part in &parts[1..] {
        for (acc, word) in out.chunks_exact_mut(size).zip(part.chunks_exact(size)) {
            add(datatype, acc, word);
        }
    }
    Ok(out)
}

/// `acc += word` for one element of `datatype` (little-endian bytes).
fn add(datatype: c_int, acc: &mut [u8], word: &[u8]) {
    macro_rules! wrapping {
        ($t:ty) => {{
            let a = <$t>::from_le_bytes(acc.try_into().expect("one element"));
            let b = <$t>::from_le_bytes(word.try_into().expect("one element"));
            acc.copy_from_slice(&a.wrapping_add(b).to_le_bytes());
        }};
    }
    match datatype {
        0 | 1 => wrapping!(u8),
        2 | 3 => wrapping!(u32),
        4 | 5 => wrapping!(u64),
        7 => {
            let a = f32::from_le_bytes(acc.try_into().expect("one element"));
            let b = f32::from_le_bytes(word.try_into().expect("one element"));
            acc.copy_from_slice(&(a + b).to_le_bytes());
        }
        _ => {
            let a = f64::from_le_bytes(acc.try_into().expect("one element"));
            let b = f64::from_le_bytes(word.try_into().expect("one element"));
            acc.copy_from_slice(&(a + b).to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_in_rank_order_and_refuses_mismatched_calls() {
        let parts = vec![1u64.to_le_bytes().to_vec(), u64::MAX.to_le_bytes().to_vec()];
        let same = vec![Some((1, 5, SUM)); 2];
        assert_eq!(sum(&same, &parts), Ok(0u64.to_le_bytes().to_vec()));
        let floats = vec![0.1f64.to_le_bytes().to_vec(), 0.2f64.to_le_bytes().to_vec()];
        let f = vec![Some((1, 8, SUM)); 2];
        assert_eq!(sum(&f, &floats), Ok((0.1f64 + 0.2).to_le_bytes().to_vec()));
        let mismatched = vec![Some((1, 5, SUM)), Some((2, 5, SUM))];
        assert_eq!(sum(&mismatched, &parts), Err(INVALID_USAGE));
        let max = vec![Some((1, 5, 2)); 2];
        assert_eq!(sum(&max, &parts), Err(INVALID_ARGUMENT));
    }

    /// Each rank's outcome of one call with `signature(rank)` and `bytes(rank)`, on threads.
    fn call(
        comms: &[Comm],
        signature: impl Fn(usize) -> Signature + Sync,
        bytes: impl Fn(usize) -> Vec<u8> + Sync,
    ) -> Vec<Result<Vec<u8>, c_int>> {
        std::thread::scope(|s| {
            let (signature, bytes) = (&signature, &bytes);
            let handles: Vec<_> = comms
                .iter()
                .map(|c| s.spawn(move || rendezvous(c, signature(c.rank), bytes(c.rank))))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    #[test]
    fn ranks_meet_per_call_and_a_departure_fails_the_others() {
        let group = new_group(3);
        let comms: Vec<Comm> = (0..3)
            .map(|rank| Comm {
                group: group.clone(),
                rank,
            })
            .collect();
        let word = |r: usize| (r as u64 + 1).to_le_bytes().to_vec();
        for _ in 0..20 {
            let out = call(&comms, |_| (1, 5, SUM), word);
            assert!(out.iter().all(|o| o == &Ok(6u64.to_le_bytes().to_vec())));
        }
        // Different counts: every rank fails, and the next call works again.
        let out = call(&comms, |r| (1 + r, 5, SUM), word);
        assert!(out.iter().all(|o| o == &Err(INVALID_USAGE)), "{out:?}");
        assert!(call(&comms, |_| (1, 5, SUM), word)
            .iter()
            .all(Result::is_ok));
        // A rank leaves: the others' calls fail instead of waiting.
        group.leave();
        let out = call(&comms[1..], |_| (1, 5, SUM), word);
        assert!(out.iter().all(|o| o == &Err(REMOTE_ERROR)), "{out:?}");
    }
}
