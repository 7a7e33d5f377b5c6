//! Peer messaging: the [`Transport`] seam the node core sends Raft messages through, and the
//! wire encoding of those messages.
//!
//! A transport is fire-and-forget, like Raft expects: a message may be lost, delayed,
//! duplicated or reordered, and Raft recovers from all of it. `send` never blocks; a slow or
//! dead peer must not hold up the others.

use keel_raft::Message;
use prost::Message as _;

/// Where the node core hands the messages it wants delivered to peers.
pub trait Transport {
    /// Queues `msg` for `msg.to`; never blocks.
    fn send(&mut self, msg: Message);
}

impl Transport for Vec<Message> {
    fn send(&mut self, msg: Message) {
        self.push(msg);
    }
}

/// Version byte leading every frame, so a future encoding can be told apart.
const WIRE_VERSION: u8 = 1;

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The frame is empty or from an unknown protocol version.
    #[error("peer frame has unknown version {0:?}")]
    Version(Option<u8>),
    /// The body is not a Raft message.
    #[error("peer frame is not a raft message: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// Encodes a Raft message for the wire.
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + msg.encoded_len());
    out.push(WIRE_VERSION);
    msg.encode(&mut out).expect("a Vec grows as needed");
    out
}

/// Decodes a frame made by [`encode`].
pub fn decode(frame: &[u8]) -> Result<Message, WireError> {
    match frame.split_first() {
        Some((&WIRE_VERSION, body)) => Ok(Message::decode(body)?),
        other => Err(WireError::Version(other.map(|(v, _)| *v))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_raft::{Entry, MessageType};

    #[test]
    fn round_trip_and_rejects() {
        let mut msg = Message::new(MessageType::Append, 1, 2);
        msg.term = 3;
        msg.entries = vec![Entry::normal(b"x".to_vec())];
        let frame = encode(&msg);
        assert_eq!(decode(&frame).unwrap(), msg);
        assert!(matches!(decode(&[]), Err(WireError::Version(None))));
        assert!(matches!(decode(&[9, 1]), Err(WireError::Version(Some(9)))));
        assert!(matches!(decode(&[WIRE_VERSION, 0xff]), Err(WireError::Decode(_))));
    }
}
