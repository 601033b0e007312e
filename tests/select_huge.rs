//! Groups of more than 2^32 entries (issue 11): every count that can reach a group's length is
//! 64-bit, so the kept count and the threshold stay exact where a 32-bit count would wrap.
//!
//! The data needs little real memory:
//! - zeros come from a zeroed allocation, which the kernel backs with its zero page until written
//!   (a few seeded entries are written, a page each);
//! - a pattern is one real 64 MiB buffer lent as many tensors of one global group (slices alias
//!   for reading).
//!
//! In both, the bucket holding the threshold has more than 2^32 entries and does not fit the
//! candidate buffer, so the refinement re-reads the gradients (`refine_stream`, one task per
//! group). The cost is the reading, 2-3 passes per selection: on the 2-core dev VM with a load
//! average of 8-9 from other jobs, each test takes 15-27 s of CPU and 45 s of wall time or less
//! when run alone (1.3-1.8 GB resident). They are not `#[ignore]`d.

use std::collections::BTreeMap;

use gradmask::config::kept_target;
use gradmask::{CpuSelector, GradElem, GroupStats, Scope, TensorTable, KEEP_NONE};
use half::bf16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TWO_32: u64 = 1 << 32;

/// The `target`-th largest key of a group given as key -> count, and how many entries are kept
/// (every entry with a key >= it): the sort oracle, without the sort.
fn expected(counts: &BTreeMap<u32, u64>, target: u64) -> (u32, u64) {
    if target == 0 {
        return (KEEP_NONE, 0);
    }
    let mut kept = 0;
    for (&key, &count) in counts.iter().rev() {
        kept += count;
        if kept >= target {
            return (key, kept);
        }
    }
    unreachable!("target {target} exceeds the group's {kept} entries")
}

fn check(got: &GroupStats, counts: &BTreeMap<u32, u64>, ratio: f64, what: &str) {
    let len: u64 = counts.values().sum();
    let target = kept_target(len, ratio);
    let (threshold_key, kept) = expected(counts, target);
    assert_eq!(
        (got.len, got.target, got.threshold_key, got.kept),
        (len, target, threshold_key, kept),
        "{what}"
    );
}

/// `n` bf16 zeros on the zero page, with `planted` seeded non-zero entries (each at a random
/// place, each a page of real memory). Returns the buffer (as u16 bits) and its key counts.
fn zeros_with_a_few_values(n: usize, planted: usize, seed: u64) -> (Vec<u16>, BTreeMap<u32, u64>) {
    let mut bits = vec![0u16; n]; // calloc: mmap'ed, read faults map the zero page
    let mut rng = StdRng::seed_from_u64(seed);
    let mut written = BTreeMap::new(); // place -> key (a later draw at the same place wins)
    for _ in 0..planted {
        // Small subnormals (keys 1..7, the zero bucket's neighbours) and larger values.
        let key = if rng.random_bool(0.5) {
            rng.random_range(1..8u16)
        } else {
            rng.random_range(0x3000..0x4000u16)
        };
        let place = rng.random_range(0..n);
        bits[place] = key | if rng.random_bool(0.5) { 0x8000 } else { 0 };
        written.insert(place, key);
    }
    let mut counts = BTreeMap::from([(0, (n - written.len()) as u64)]);
    for key in written.into_values() {
        *counts.entry(u32::from(key)).or_insert(0) += 1;
    }
    (bits, counts)
}

/// `n` zero-page bf16 entries, all zero but `planted` seeded values, in one group at `ratio`: the
/// target lands in the zeros, so every entry is kept.
fn select_zeros(n: u64, planted: usize, ratio: f64, scope: Scope, seed: u64) {
    let n = n as usize;
    let (bits, counts) = zeros_with_a_few_values(n, planted, seed);
    // The zeros' bin of the last digit must itself overflow a u32, or the test proves nothing.
    assert!(counts[&0] >= TWO_32, "{} zeros", counts[&0]);
    let grads: &[bf16] = bytemuck::cast_slice(&bits);
    let table = TensorTable::per_tensor(&[n]).unwrap();
    let mut selector = CpuSelector::new(&table, scope);
    let got = selector.select(&[grads], ratio).unwrap().groups[0];
    assert_eq!(got.kept, n as u64, "every zero ties at the threshold");
    check(&got, &counts, ratio, &format!("{n} zeros, ratio {ratio}"));
}

/// The first repro: 2^32 + 2 zeros at r = 0.5 panicked in choose_bin. Nothing planted:
/// two non-zero entries would leave fewer than 2^32 zeros.
#[test]
fn zero_page_group_of_2_32_plus_2_at_half() {
    select_zeros(TWO_32 + 2, 0, 0.5, Scope::Global, 1);
}

/// The second repro: 2^32 + 2^31 zeros at r = 0.9 reported kept = 2^31; here with 301
/// seeded values planted (subnormals next to zero, and larger values).
#[test]
fn zero_page_group_of_2_32_plus_2_31_at_0_9() {
    select_zeros(TWO_32 + TWO_32 / 2, 301, 0.9, Scope::PerTensor, 2);
}

/// Keys of one f32 first-digit bucket (exponent 127, mantissa 0x40000..0x47FFF: [1.5, 1.5625)),
/// which differ in the second digit (bits 18..8) and the third (bits 7..0).
fn in_bucket(second: u32, third: u32) -> u32 {
    0x3FC0_0000 | (second << 8) | third
}

/// A 64 MiB f32 buffer lent as `copies` tensors of one global group: mostly one value (`bulk`,
/// more than 2^32 entries in the group), the rest seeded draws from keys of the same first-digit
/// bucket (around the bulk in both later digits) and outside it. Returns the buffer, the bulk key
/// and the group's key counts.
fn shared_pattern(copies: u64, seed: u64) -> (Vec<f32>, u32, BTreeMap<u32, u64>) {
    const LEN: usize = 1 << 24;
    let bulk = in_bucket(1024, 100);
    let others = [
        in_bucket(1024, 101), // same second digit, just above and below in the third
        in_bucket(1024, 255),
        in_bucket(1024, 99),
        in_bucket(1024, 3),
        in_bucket(2047, 0), // same bucket, other second digits
        in_bucket(1025, 7),
        in_bucket(1023, 200),
        in_bucket(7, 1),
        3.0f32.key(), // other buckets, above and below
        1.0f32.key(),
        1e-30f32.key(),
        0,
    ];
    let mut rng = StdRng::seed_from_u64(seed);
    let mut counts = BTreeMap::new();
    let data: Vec<f32> = (0..LEN)
        .map(|_| {
            let key = if rng.random_bool(0.03) {
                others[rng.random_range(0..others.len())]
            } else {
                bulk
            };
            *counts.entry(key).or_insert(0) += copies;
            let sign = if rng.random_bool(0.5) { 0x8000_0000 } else { 0 };
            f32::from_bits(key | sign)
        })
        .collect();
    (data, bulk, counts)
}

/// One global selection over the shared pattern, with the target `past` entries past the last
/// entry above the bulk (1: the bulk's first entry; the bulk's count plus 1: the first entry below
/// it). The target must land in `expect_in` (a range relative to the same point).
fn select_around_the_bulk(
    seed: u64,
    past: impl Fn(u64) -> u64,
    expect_in: impl Fn(u64, u64) -> bool,
) {
    let copies = 272; // 272 * 2^24 = 4.56e9 entries
    let (data, bulk, counts) = shared_pattern(copies, seed);
    let n: u64 = counts.values().sum();
    let above: u64 = counts.range(bulk + 1..).map(|(_, &c)| c).sum();
    let in_bulk = counts[&bulk];
    assert!(in_bulk > TWO_32, "the bulk must overflow a u32: {in_bulk}");
    let ratio = (n - (above + past(in_bulk))) as f64 / n as f64;
    let target = kept_target(n, ratio);
    assert!(
        target > above && expect_in(target - above, in_bulk),
        "ratio {ratio} gives target {target}"
    );
    let table = TensorTable::per_tensor(&vec![data.len(); copies as usize]).unwrap();
    let grads: Vec<&[f32]> = vec![&data[..]; copies as usize];
    let mut selector = CpuSelector::new(&table, Scope::Global);
    let got = selector.select(&grads, ratio).unwrap().groups[0];
    check(&got, &counts, ratio, &format!("target {target} of {n}"));
}

/// A bin of more than 2^32 equal keys amid neighbours in every digit, the target just inside it:
/// a u32 count of the bin would wrap and the bin be passed over.
#[test]
fn shared_pages_target_inside_a_bin_beyond_2_32() {
    select_around_the_bulk(11, |_| 1, |t, in_bulk| t <= in_bulk);
}

/// The same, the target just past the bin (the first key below it): the count above the target
/// includes the whole bin.
#[test]
fn shared_pages_target_just_below_a_bin_beyond_2_32() {
    select_around_the_bulk(12, |in_bulk| in_bulk + 1, |t, in_bulk| t > in_bulk);
}
