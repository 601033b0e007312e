//! Device (global) memory: allocations with an initialisation shadow, and, during a launch, a
//! store tag per 2-byte granule that says which block wrote it and whether that block has fenced
//! since.
//!
//! Addresses are handed out by a bump pointer and never reused, with an unmapped gap after every
//! allocation, so an overrun or a use after free always lands outside any live allocation.

use std::collections::BTreeMap;

use super::initbits::InitBits;

/// Where device allocations start (a UVA-like address, never 0).
pub const DEVICE_BASE: u64 = 0x7f40_0000_0000;
/// Alignment of every allocation (cudaMalloc gives at least 256).
pub const ALLOC_ALIGN: u64 = 256;
/// Unmapped bytes after each allocation.
const GAP: u64 = 4096;

/// A store tag: 0 for "not written in this launch", else (block + 1) << 12 | the block's fence
/// count at the store, modulo 4096.
pub type Tag = u32;

pub fn make_tag(block: u32, fences: u32) -> Tag {
    ((block + 1) << 12) | (fences & 0xfff)
}

pub fn tag_block(tag: Tag) -> Option<u32> {
    (tag >> 12).checked_sub(1)
}

pub fn tag_fences(tag: Tag) -> u32 {
    tag & 0xfff
}

pub struct Alloc {
    pub base: u64,
    pub data: Vec<u8>,
    /// Which bytes were written since allocation.
    pub init: InitBits,
    /// Store tags and the sectors touched, only during a launch that accessed this allocation.
    pub launch: Option<Box<LaunchShadow>>,
}

/// What a launch records about one allocation: a store tag per 2-byte granule (0: not written in
/// this launch), and the 32-byte sectors read and written (the launch's footprint).
pub struct LaunchShadow {
    pub tags: Vec<Tag>,
    pub read: Vec<u64>,
    pub written: Vec<u64>,
}

fn mark_sectors(bits: &mut [u64], off: usize, len: usize) {
    for sector in off / 32..=(off + len - 1) / 32 {
        bits[sector / 64] |= 1 << (sector % 64);
    }
}

impl Alloc {
    fn shadow(&mut self) -> &mut LaunchShadow {
        let len = self.data.len();
        self.launch.get_or_insert_with(|| {
            Box::new(LaunchShadow {
                tags: vec![0; len.div_ceil(2)],
                read: vec![0; len.div_ceil(32).div_ceil(64)],
                written: vec![0; len.div_ceil(32).div_ceil(64)],
            })
        })
    }

    /// Records a load of `len` bytes at `off` in the footprint.
    pub fn note_read(&mut self, off: usize, len: usize) {
        mark_sectors(&mut self.shadow().read, off, len);
    }

    /// Records a store (or the write of an atomic) by a block with this `tag`.
    pub fn note_write(&mut self, off: usize, len: usize, tag: Tag) {
        let shadow = self.shadow();
        mark_sectors(&mut shadow.written, off, len);
        shadow.tags[off / 2..(off + len).div_ceil(2)].fill(tag);
    }

    /// The tag of the last store to each used 2-byte granule of `len` bytes at `off` in this
    /// launch (granules whose bytes `used_mask` excludes are skipped).
    pub fn tags(&self, off: usize, len: usize, used_mask: u32) -> impl Iterator<Item = Tag> + '_ {
        let tags = self
            .launch
            .as_ref()
            .map_or(&[][..], |s| &s.tags[off / 2..(off + len).div_ceil(2)]);
        tags.iter().enumerate().filter_map(move |(i, &t)| {
            let first = (off / 2 + i) * 2 - off.min((off / 2 + i) * 2);
            ((used_mask >> first.min(31)) & 3 != 0 && t != 0).then_some(t)
        })
    }
}

/// Why an access or a free was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemError {
    Null,
    Unmapped(String),
    Freed { base: u64, size: u64 },
    OutOfBounds { base: u64, size: u64 },
}

impl std::fmt::Display for MemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemError::Null => write!(f, "the null address"),
            MemError::Unmapped(near) => write!(f, "no allocation there ({near})"),
            MemError::Freed { base, size } => {
                write!(
                    f,
                    "inside the freed {size}-byte allocation at {base:#x} (use after free)"
                )
            }
            MemError::OutOfBounds { base, size } => {
                write!(f, "past the end of the {size}-byte allocation at {base:#x}")
            }
        }
    }
}

#[derive(Default)]
pub struct Memory {
    slots: Vec<Option<Alloc>>,
    by_base: BTreeMap<u64, usize>,
    freed: BTreeMap<u64, u64>,
    next: u64,
    pub bytes_live: u64,
}

impl Memory {
    pub fn alloc(&mut self, size: u64) -> u64 {
        if self.next == 0 {
            self.next = DEVICE_BASE;
        }
        let base = self.next;
        self.next = (base + size + GAP).div_ceil(ALLOC_ALIGN) * ALLOC_ALIGN;
        let size = size as usize;
        self.slots.push(Some(Alloc {
            base,
            data: vec![0u8; size],
            init: InitBits::new(size),
            launch: None,
        }));
        self.by_base.insert(base, self.slots.len() - 1);
        self.bytes_live += size as u64;
        base
    }

    pub fn free(&mut self, base: u64) -> Result<(), MemError> {
        match self.by_base.remove(&base) {
            Some(slot) => {
                let a = self.slots[slot].take().expect("live slot");
                self.bytes_live -= a.data.len() as u64;
                self.freed.insert(base, a.data.len() as u64);
                Ok(())
            }
            None if base == 0 => Err(MemError::Null),
            None => Err(self.classify(base)),
        }
    }

    /// Why `addr` is not in a live allocation.
    fn classify(&self, addr: u64) -> MemError {
        if addr == 0 {
            return MemError::Null;
        }
        if let Some((&base, &size)) = self.freed.range(..=addr).next_back() {
            if addr < base + size.max(1) {
                return MemError::Freed { base, size };
            }
        }
        if let Some((&base, &slot)) = self.by_base.range(..=addr).next_back() {
            let size = self.slots[slot].as_ref().unwrap().data.len() as u64;
            if addr < base + size + GAP {
                return MemError::OutOfBounds { base, size };
            }
        }
        MemError::Unmapped(format!("address {addr:#x}"))
    }

    /// The slot and offset of `len` bytes at `addr`, all inside one live allocation.
    #[inline]
    pub fn locate(&self, addr: u64, len: u64) -> Result<(usize, usize), MemError> {
        match self.by_base.range(..=addr).next_back() {
            Some((&base, &slot)) => {
                let a = self.slots[slot].as_ref().unwrap();
                if addr + len <= base + a.data.len() as u64 {
                    Ok((slot, (addr - base) as usize))
                } else {
                    Err(self.classify(addr + len - 1).min_with(self.classify(addr)))
                }
            }
            None => Err(self.classify(addr)),
        }
    }

    /// `locate`, trying the allocation of the previous access first (a warp's lanes mostly
    /// touch one allocation).
    #[inline]
    pub fn locate_cached(
        &self,
        addr: u64,
        len: u64,
        cache: &mut (u64, u64, usize),
    ) -> Result<(usize, usize), MemError> {
        let (base, end, slot) = *cache;
        if addr >= base && addr + len <= end {
            return Ok((slot, (addr - base) as usize));
        }
        let (slot, off) = self.locate(addr, len)?;
        let a = self.slot(slot);
        *cache = (a.base, a.base + a.data.len() as u64, slot);
        Ok((slot, off))
    }

    /// The allocation containing `addr` (its base and length), if any.
    pub fn range_of(&self, addr: u64) -> Option<(u64, u64)> {
        let (&base, &slot) = self.by_base.range(..=addr).next_back()?;
        let len = self.slots[slot].as_ref().unwrap().data.len() as u64;
        (addr < base + len).then_some((base, len))
    }

    #[inline]
    pub fn slot(&self, slot: usize) -> &Alloc {
        self.slots[slot].as_ref().unwrap()
    }

    #[inline]
    pub fn slot_mut(&mut self, slot: usize) -> &mut Alloc {
        self.slots[slot].as_mut().unwrap()
    }

    /// Copies host bytes in (a memcpy to the device): marks them initialised.
    pub fn write(&mut self, addr: u64, bytes: &[u8]) -> Result<(), MemError> {
        if bytes.is_empty() {
            return Ok(());
        }
        let (slot, off) = self.locate(addr, bytes.len() as u64)?;
        let a = self.slot_mut(slot);
        a.data[off..off + bytes.len()].copy_from_slice(bytes);
        a.init.mark(off, bytes.len());
        Ok(())
    }

    pub fn read(&self, addr: u64, out: &mut [u8]) -> Result<(), MemError> {
        if out.is_empty() {
            return Ok(());
        }
        let (slot, off) = self.locate(addr, out.len() as u64)?;
        out.copy_from_slice(&self.slot(slot).data[off..off + out.len()]);
        Ok(())
    }

    pub fn fill(&mut self, addr: u64, value: u8, len: u64) -> Result<(), MemError> {
        if len == 0 {
            return Ok(());
        }
        let (slot, off) = self.locate(addr, len)?;
        let a = self.slot_mut(slot);
        a.data[off..off + len as usize].fill(value);
        a.init.mark(off, len as usize);
        Ok(())
    }

    /// Device-to-device copy; the destination's initialisation follows the source's.
    pub fn copy(&mut self, dst: u64, src: u64, len: u64) -> Result<(), MemError> {
        if len == 0 {
            return Ok(());
        }
        let (s_slot, s_off) = self.locate(src, len)?;
        let (d_slot, d_off) = self.locate(dst, len)?;
        let len = len as usize;
        let bytes = self.slot(s_slot).data[s_off..s_off + len].to_vec();
        let init: Vec<bool> = (0..len)
            .map(|i| self.slot(s_slot).init.get(s_off + i))
            .collect();
        let d = self.slot_mut(d_slot);
        d.data[d_off..d_off + len].copy_from_slice(&bytes);
        for (i, ok) in init.into_iter().enumerate() {
            if ok {
                d.init.mark(d_off + i, 1);
            }
        }
        Ok(())
    }

    /// Ends a launch: drops every store tag (every store is now visible) and returns, for every
    /// allocation the launch touched, its base and the distinct 32-byte sectors read and written.
    pub fn end_launch(&mut self) -> Vec<(u64, u64, u64)> {
        let count = |bits: &[u64]| bits.iter().map(|w| w.count_ones() as u64).sum::<u64>();
        self.slots
            .iter_mut()
            .flatten()
            .filter_map(|a| {
                a.launch
                    .take()
                    .map(|s| (a.base, count(&s.read), count(&s.written)))
            })
            .collect()
    }
}

impl MemError {
    /// The more informative of two reasons (a freed or overrun allocation beats "unmapped").
    fn min_with(self, other: MemError) -> MemError {
        match (&self, &other) {
            (MemError::Unmapped(_), _) => other,
            _ => self,
        }
    }
}
