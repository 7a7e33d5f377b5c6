//! Sub-seeds: every subsystem draws from its own stream, derived from the run's seed and a
//! name, so adding randomness in one place does not shift every other stream.

use xxhash_rust::xxh3::xxh3_64;

/// The seed of stream `name` number `index` in run `seed`.
pub fn sub_seed(seed: u64, name: &str, index: u64) -> u64 {
    let mut bytes = seed.to_le_bytes().to_vec();
    bytes.extend_from_slice(name.as_bytes());
    bytes.extend_from_slice(&index.to_le_bytes());
    xxh3_64(&bytes)
}
