//! `Collective`: the all-reduce (sum) that sharded selection needs, and `ThreadCollective`, an
//! in-process implementation with one rank per thread.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::{Error, Result};

/// An all-reduce (sum) over the ranks of a group, on host buffers. Every rank calls the same
/// functions in the same order with buffers of the same length; each returns with the element-wise
/// sum over all ranks in its buffer (u64: wrapping). An implementation must give every rank the
/// same bits (the f64 sum in a fixed order), and report a failure as [`Error::Collective`].
///
/// The CPU engine uses it; the CUDA engine uses [`crate::cuda::DeviceCollective`] (NCCL, on the
/// caller's stream). `Sync` only so that the objects holding one can be shared between threads;
/// every call takes `&mut self`.
pub trait Collective: Send + Sync {
    /// This rank, in `0..world()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn world(&self) -> usize;
    /// Replaces `buffer` with its wrapping sum over all ranks.
    fn all_reduce_u64(&mut self, buffer: &mut [u64]) -> Result<()>;
    /// Replaces `buffer` with its sum over all ranks (the same bits on every rank).
    fn all_reduce_f64(&mut self, buffer: &mut [f64]) -> Result<()>;
}

/// What a sharded call communicated: all-reduce calls and the bytes of the buffers reduced (per
/// rank; a ring all-reduce moves about `2 (world - 1) / world` times that over each rank's link).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommStats {
    pub calls: u64,
    pub bytes: u64,
}

impl CommStats {
    pub(crate) fn count(&mut self, words: usize) {
        self.calls += 1;
        self.bytes += 8 * words as u64;
    }
}

/// One member of an in-process group: ranks are threads, the sum is taken under a mutex in rank
/// order (so f64 sums have the same bits on every rank and in every run). A rank whose endpoint
/// is dropped (a thread that returned or panicked) breaks the group: the others' calls fail with
/// [`Error::Collective`] instead of waiting forever, and so does every later call.
pub struct ThreadCollective {
    rank: usize,
    world: usize,
    shared: Arc<Shared>,
}

struct Shared {
    round: Mutex<Round>,
    changed: Condvar,
}

#[derive(Default)]
struct Round {
    /// Rounds completed; a waiting rank knows its round finished when this moves.
    generation: u64,
    arrived: usize,
    /// Ranks that have not yet copied the finished round's result out.
    leaving: usize,
    /// Per rank, the words of its buffer (f64 as bits) and whether they are f64.
    parts: Vec<Vec<u64>>,
    kinds: Vec<bool>,
    result: Vec<u64>,
    failure: Option<String>,
    broken: Option<String>,
}

impl ThreadCollective {
    /// The `world` members of a new group, rank `r` at index `r`; hand one to each thread.
    pub fn group(world: usize) -> Vec<ThreadCollective> {
        let shared = Arc::new(Shared {
            round: Mutex::new(Round {
                parts: vec![Vec::new(); world],
                kinds: vec![false; world],
                ..Round::default()
            }),
            changed: Condvar::new(),
        });
        (0..world)
            .map(|rank| ThreadCollective {
                rank,
                world,
                shared: shared.clone(),
            })
            .collect()
    }

    fn lock(&self) -> Result<MutexGuard<'_, Round>> {
        self.shared
            .round
            .lock()
            .map_err(|_| Error::Collective("a rank panicked inside an all-reduce".into()))
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, Round>) -> Result<MutexGuard<'a, Round>> {
        self.shared
            .changed
            .wait(guard)
            .map_err(|_| Error::Collective("a rank panicked inside an all-reduce".into()))
    }

    /// The all-reduce of `words` (f64 bits when `float`), in place.
    fn reduce(&mut self, words: &mut [u64], float: bool) -> Result<()> {
        let mut round = self.lock()?;
        while round.leaving > 0 && round.broken.is_none() {
            round = self.wait(round)?;
        }
        if let Some(why) = &round.broken {
            return Err(Error::Collective(why.clone()));
        }
        round.parts[self.rank].clear();
        round.parts[self.rank].extend_from_slice(words);
        round.kinds[self.rank] = float;
        round.arrived += 1;
        let generation = round.generation;
        if round.arrived == self.world {
            finish(&mut round, self.world);
            self.shared.changed.notify_all();
        } else {
            while round.generation == generation && round.broken.is_none() {
                round = self.wait(round)?;
            }
            if round.generation == generation {
                return Err(Error::Collective(round.broken.clone().unwrap_or_default()));
            }
        }
        let outcome = match &round.failure {
            Some(why) => Err(Error::Collective(why.clone())),
            None => {
                words.copy_from_slice(&round.result);
                Ok(())
            }
        };
        round.leaving -= 1;
        if round.leaving == 0 {
            self.shared.changed.notify_all();
        }
        outcome
    }
}

/// Sums the parts in rank order (checks lengths and kinds first) and opens the round for reading.
fn finish(round: &mut Round, world: usize) {
    let (len, float) = (round.parts[0].len(), round.kinds[0]);
    round.failure = None;
    if round.parts.iter().any(|p| p.len() != len) || round.kinds.iter().any(|&k| k != float) {
        let lens: Vec<usize> = round.parts.iter().map(Vec::len).collect();
        round.failure = Some(format!(
            "the ranks passed different buffers: lengths {lens:?}"
        ));
    } else {
        round.result.clear();
        round.result.extend_from_slice(&round.parts[0]);
        for part in &round.parts[1..] {
            for (sum, &word) in round.result.iter_mut().zip(part) {
                *sum = if float {
                    (f64::from_bits(*sum) + f64::from_bits(word)).to_bits()
                } else {
                    sum.wrapping_add(word)
                };
            }
        }
    }
    round.arrived = 0;
    round.leaving = world;
    round.generation += 1;
}

impl Collective for ThreadCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn all_reduce_u64(&mut self, buffer: &mut [u64]) -> Result<()> {
        self.reduce(buffer, false)
    }

    fn all_reduce_f64(&mut self, buffer: &mut [f64]) -> Result<()> {
        let words: &mut [u64] = bytemuck::cast_slice_mut(buffer);
        self.reduce(words, true)
    }
}

impl Drop for ThreadCollective {
    fn drop(&mut self) {
        let mut round = match self.shared.round.lock() {
            Ok(round) => round,
            Err(poisoned) => poisoned.into_inner(),
        };
        if round.broken.is_none() {
            round.broken = Some(format!("rank {} left the group", self.rank));
        }
        self.shared.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_reach_every_rank_and_a_departure_breaks_the_group() {
        let results: Vec<(Vec<u64>, Vec<f64>)> = std::thread::scope(|s| {
            let handles: Vec<_> = ThreadCollective::group(3)
                .into_iter()
                .map(|mut c| {
                    s.spawn(move || {
                        let r = c.rank() as u64;
                        let mut ints = vec![r, u64::MAX * (r == 2) as u64, 1];
                        let mut floats = vec![0.1 * r as f64, 1e16, -(r as f64)];
                        for _ in 0..50 {
                            c.all_reduce_u64(&mut ints[..1]).unwrap(); // many rounds in a row
                            ints[0] = r;
                        }
                        c.all_reduce_u64(&mut ints).unwrap();
                        c.all_reduce_f64(&mut floats).unwrap();
                        (ints, floats)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (ints, floats) in &results {
            assert_eq!(ints, &vec![3, u64::MAX, 3]);
            assert_eq!(floats[0].to_bits(), ((0.0 + 0.1) + 0.2f64).to_bits());
            assert_eq!(floats[2], -3.0);
        }
        let mut group = ThreadCollective::group(2);
        let mut second = group.pop().unwrap();
        drop(group); // rank 0 leaves
        assert!(matches!(
            second.all_reduce_u64(&mut [1]),
            Err(Error::Collective(_))
        ));
    }

    #[test]
    fn buffers_of_different_lengths_fail_on_every_rank() {
        let outcomes: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = ThreadCollective::group(2)
                .into_iter()
                .map(|mut c| {
                    s.spawn(move || {
                        let mut buffer = vec![0u64; 1 + c.rank()];
                        c.all_reduce_u64(&mut buffer).is_err()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(outcomes, vec![true, true]);
    }
}
