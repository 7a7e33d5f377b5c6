//! Bounded, seeded fuzzing for the decoders that read untrusted bytes (client frames and
//! messages, peer frames, WAL segments, snapshot images), run as ordinary `cargo test` tests
//! in the debug build, whose overflow checks and debug assertions turn silent wrap-arounds
//! into failures.
//!
//! A target is a function of a byte slice that must not panic (and may assert properties of
//! its own). [`fuzz`] feeds it inputs derived from one seed: the examples the test gives
//! (valid encodings), each mutated a few times — bits flipped, bytes set to edge values,
//! big-endian integers and protobuf varints set to edge values (i64's ends, -1, 0), ranges
//! cut, duplicated or spliced from another example — and, now and then, random bytes. A panic is reported with the seed, the round
//! and the input in hex, so `KEEL_FUZZ_SEED` reproduces it; `KEEL_FUZZ_ROUNDS` runs longer to
//! explore (the default keeps each target to a second or two).
//!
//! The targets are plain `fn(&[u8])`, so a coverage-guided fuzzer (`cargo fuzz`) can drive
//! the same functions.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Rounds per target unless `KEEL_FUZZ_ROUNDS` says otherwise.
pub const DEFAULT_ROUNDS: u64 = 3_000;

/// The most mutations stacked on one input.
const MAX_MUTATIONS: usize = 6;

/// The largest input built (mutations that would grow past it are skipped).
const MAX_INPUT: usize = 1 << 16;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs `target` on `KEEL_FUZZ_ROUNDS` inputs made from `examples` (at least one), drawn
/// from `KEEL_FUZZ_SEED` (default 1) and the target's `name`.
pub fn fuzz(name: &str, examples: &[Vec<u8>], mut target: impl FnMut(&[u8])) {
    assert!(!examples.is_empty(), "{name}: a target needs an example");
    let seed = env_u64("KEEL_FUZZ_SEED", 1);
    let rounds = env_u64("KEEL_FUZZ_ROUNDS", DEFAULT_ROUNDS);
    let name_hash =
        name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ name_hash);
    for round in 0..rounds {
        let input = next_input(&mut rng, examples);
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| target(&input))) {
            eprintln!(
                "fuzz target {name} panicked in round {round} (replay: KEEL_FUZZ_SEED={seed} KEEL_FUZZ_ROUNDS={}) on \
                 {} bytes: {}",
                round + 1,
                input.len(),
                hex(&input)
            );
            resume_unwind(panic);
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One input: random bytes one time in sixteen, else a mutated example.
fn next_input(rng: &mut ChaCha8Rng, examples: &[Vec<u8>]) -> Vec<u8> {
    if rng.gen_ratio(1, 16) {
        let len = rng.gen_range(0..256);
        return (0..len).map(|_| rng.gen()).collect();
    }
    let mut input = examples[rng.gen_range(0..examples.len())].clone();
    // One mutation half the time, two a quarter of the time, ...: most inputs stay close
    // enough to valid to get past the first checks.
    let mutations = 1 + (rng.gen::<u32>().trailing_zeros() as usize).min(MAX_MUTATIONS - 1);
    for _ in 0..mutations {
        mutate(rng, &mut input, examples);
    }
    input
}

/// Byte values parsers get wrong.
const EDGE_BYTES: [u8; 6] = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff];

/// 32-bit values length and count fields get wrong.
const EDGE_U32: [u32; 7] = [0, 1, 0x7f, 0x8000_0000, 0x7fff_ffff, 0xffff_fffe, 0xffff_ffff];

/// Protobuf varints arithmetic on client numbers gets wrong: i64's ends, -1, 0, u32's end.
const EDGE_VARINTS: [u64; 7] = [0, 1, u64::MAX, i64::MAX as u64, i64::MIN as u64, u32::MAX as u64, 1 << 31];

/// Appends `value` as a protobuf varint.
fn put_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn mutate(rng: &mut ChaCha8Rng, input: &mut Vec<u8>, examples: &[Vec<u8>]) {
    let len = input.len();
    let at = |rng: &mut ChaCha8Rng| rng.gen_range(0..=len);
    match rng.gen_range(0..9) {
        0 if len > 0 => {
            let i = rng.gen_range(0..len);
            input[i] ^= 1 << rng.gen_range(0..8);
        }
        1 if len > 0 => {
            let i = rng.gen_range(0..len);
            input[i] = EDGE_BYTES[rng.gen_range(0..EDGE_BYTES.len())];
        }
        2 if len >= 4 => {
            let i = rng.gen_range(0..=len - 4);
            let value = match rng.gen_range(0..3) {
                0 => EDGE_U32[rng.gen_range(0..EDGE_U32.len())],
                1 => len as u32 + rng.gen_range(0..3),
                _ => u32::from_be_bytes(input[i..i + 4].try_into().expect("4 bytes")).wrapping_add(rng.gen_range(1..3)),
            };
            input[i..i + 4].copy_from_slice(&value.to_be_bytes());
        }
        3 => {
            let cut = at(rng);
            input.truncate(cut);
        }
        4 if len > 0 => {
            let start = rng.gen_range(0..len);
            let end = rng.gen_range(start..=len);
            input.drain(start..end);
        }
        5 if len > 0 && len * 2 <= MAX_INPUT => {
            let start = rng.gen_range(0..len);
            let end = rng.gen_range(start..=len);
            let copy = input[start..end].to_vec();
            let to = at(rng);
            input.splice(to..to, copy);
        }
        6 => {
            let other = &examples[rng.gen_range(0..examples.len())];
            if !other.is_empty() && len + other.len() <= MAX_INPUT {
                let start = rng.gen_range(0..other.len());
                let end = rng.gen_range(start..=other.len());
                let to = at(rng);
                input.splice(to..to, other[start..end].iter().copied());
            }
        }
        7 if len > 0 => {
            // The varint starting at a random byte becomes an edge value.
            let start = rng.gen_range(0..len);
            let end = input[start..].iter().position(|b| b & 0x80 == 0).map_or(len, |i| start + i + 1);
            let mut varint = Vec::new();
            put_varint(EDGE_VARINTS[rng.gen_range(0..EDGE_VARINTS.len())], &mut varint);
            input.splice(start..end, varint);
        }
        _ => {
            let count = rng.gen_range(1..16);
            let to = at(rng);
            let bytes: Vec<u8> = (0..count).map(|_| rng.gen()).collect();
            input.splice(to..to, bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_replay_from_the_seed_and_a_panic_is_reported_and_raised() {
        let examples = vec![b"hello, fuzz".to_vec(), vec![0; 8]];
        let draw = || {
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            (0..50).map(|_| next_input(&mut rng, &examples)).collect::<Vec<_>>()
        };
        let inputs = draw();
        assert_eq!(inputs, draw(), "one seed, one sequence");
        assert!(inputs.iter().any(|i| i != &examples[0] && i != &examples[1]), "inputs are mutated");
        // A target that fails on some inputs is caught failing.
        let caught = catch_unwind(|| fuzz("fails", &examples, |input| assert!(input.len() < 12)));
        assert!(caught.is_err(), "the failing target was not caught");
    }
}
