//! The initcheck shadow: one bit per byte, set once the byte was written (by a copy, a memset, a
//! store or an atomic). Used for device memory and for each block's shared memory.

#[derive(Clone, Default)]
pub struct InitBits(Vec<u64>);

impl InitBits {
    pub fn new(bytes: usize) -> Self {
        InitBits(vec![0; bytes.div_ceil(64)])
    }

    pub fn clear(&mut self) {
        self.0.fill(0);
    }

    /// Whether every byte of `len` at `off` whose bit is set in `used_mask` (bit i: byte i; bytes
    /// past 31 count as used) was written.
    #[inline]
    pub fn is_init(&self, off: usize, len: usize, used_mask: u32) -> bool {
        if len == 0 {
            return true;
        }
        if len <= 32 && off / 64 == (off + len - 1) / 64 {
            let used = (used_mask as u64) & (u64::MAX >> (64 - len));
            let want = used << (off % 64);
            return self.0[off / 64] & want == want;
        }
        (0..len).all(|i| (used_mask >> i.min(31)) & 1 == 0 || self.get(off + i))
    }

    #[inline]
    pub fn get(&self, i: usize) -> bool {
        self.0[i / 64] >> (i % 64) & 1 == 1
    }

    #[inline]
    pub fn mark(&mut self, off: usize, len: usize) {
        let (mut i, end) = (off, off + len);
        while i < end {
            let bit = i % 64;
            let n = (64 - bit).min(end - i);
            let bits = if n == 64 {
                u64::MAX
            } else {
                ((1u64 << n) - 1) << bit
            };
            self.0[i / 64] |= bits;
            i += n;
        }
    }
}
