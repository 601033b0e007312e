//! A block's shared memory, with the initcheck shadow (one bit per byte, cleared when the block
//! starts) and the racecheck shadow (per byte: who wrote, read and atomically updated it in the
//! current barrier interval).

use super::initbits::InitBits;

/// Racecheck state of one byte. Thread ids are stored plus one; 0 is nobody, `MANY` several.
#[derive(Clone, Copy, Default)]
struct RaceCell {
    epoch: u32,
    writer: u16,
    reader: u16,
    atomic: u16,
}

const MANY: u16 = u16::MAX;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Access {
    Read,
    Write,
    Atomic,
}

/// A racecheck hit: the other thread and what it did.
pub struct Race {
    pub other: Option<u32>,
    pub other_access: Access,
}

pub struct Shared {
    pub data: Vec<u8>,
    pub init: InitBits,
    race: Vec<RaceCell>,
}

fn merge(x: u16, id: u16) -> u16 {
    if x == 0 || x == id {
        id
    } else {
        MANY
    }
}

fn other(x: u16, id: u16) -> bool {
    x != 0 && x != id
}

impl Shared {
    pub fn new(bytes: usize) -> Self {
        Shared {
            data: vec![0; bytes],
            init: InitBits::new(bytes),
            race: vec![RaceCell::default(); bytes],
        }
    }

    /// Resets for a new block of `bytes` (the race shadow resets lazily by epoch).
    pub fn reset(&mut self, bytes: usize) {
        if self.data.len() != bytes {
            *self = Shared::new(bytes);
        } else {
            self.init.clear();
        }
    }

    /// Records an access by thread `tid` in barrier interval `epoch`; a hazard with another
    /// thread's access in the same interval is a race (two atomics are not).
    pub fn record(
        &mut self,
        off: usize,
        len: usize,
        tid: u32,
        epoch: u32,
        access: Access,
    ) -> Result<(), Race> {
        let id = tid as u16 + 1;
        let decode = |x: u16| if x == MANY { None } else { Some(x as u32 - 1) };
        for cell in &mut self.race[off..off + len] {
            if cell.epoch != epoch {
                *cell = RaceCell {
                    epoch,
                    ..RaceCell::default()
                };
            }
            let hit = match access {
                Access::Read => {
                    if other(cell.writer, id) {
                        Some((cell.writer, Access::Write))
                    } else if other(cell.atomic, id) {
                        Some((cell.atomic, Access::Atomic))
                    } else {
                        cell.reader = merge(cell.reader, id);
                        None
                    }
                }
                Access::Write => {
                    if other(cell.writer, id) {
                        Some((cell.writer, Access::Write))
                    } else if other(cell.reader, id) {
                        Some((cell.reader, Access::Read))
                    } else if other(cell.atomic, id) {
                        Some((cell.atomic, Access::Atomic))
                    } else {
                        cell.writer = id;
                        None
                    }
                }
                Access::Atomic => {
                    if other(cell.writer, id) {
                        Some((cell.writer, Access::Write))
                    } else if other(cell.reader, id) {
                        Some((cell.reader, Access::Read))
                    } else {
                        cell.atomic = merge(cell.atomic, id);
                        None
                    }
                }
            };
            if let Some((who, what)) = hit {
                return Err(Race {
                    other: decode(who),
                    other_access: what,
                });
            }
        }
        Ok(())
    }
}
