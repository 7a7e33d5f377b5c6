//! The etcd v3 protocol as Keel speaks it.
//!
//! This crate owns what clients match on: etcd's gRPC status codes and error messages. Every
//! request Keel rejects is rejected with one of these, with exactly etcd's wording, because
//! etcd clients compare the strings.

mod errors;

pub use errors::{Code, EtcdError};
