//! Peer messaging: the [`Transport`] seam the node core sends Raft messages through, the
//! wire encoding of peer frames, and (in [`tcp`]) the glommio TCP transport that carries
//! them between `keel` processes.
//!
//! A transport is fire-and-forget, like Raft expects: a message may be lost, delayed,
//! duplicated or reordered, and Raft recovers from all of it. `send` never blocks; a slow or
//! dead peer must not hold up the others.

pub mod tcp;

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

/// The kind byte leading every frame.
const KIND_RAFT: u8 = 1;
const KIND_HELLO: u8 = 2;
const KIND_CALL: u8 = 3;
const KIND_ANSWER: u8 = 4;

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The frame is empty or of an unknown kind.
    #[error("peer frame has unknown kind {0:?}")]
    Kind(Option<u8>),
    /// The body does not decode.
    #[error("peer frame does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
}

/// The first frame on every peer connection: who is calling, and from which cluster.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Hello {
    /// The cluster the sender belongs to; a connection from another cluster is refused.
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    /// The sender's member id.
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
}

/// A request one member asks another to serve (a follower forwarding to the leader what
/// only the leader can answer), or its answer, matched by `call`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Call {
    /// Chosen by the caller; the answer carries it back.
    #[prost(uint64, tag = "1")]
    pub call: u64,
    /// The request or answer, encoded by the node.
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
}

/// One frame between peers.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A Raft message.
    Raft(Message),
    /// Opens a connection.
    Hello(Hello),
    /// A forwarded request.
    Call(Call),
    /// The answer to a forwarded request.
    Answer(Call),
}

impl Frame {
    /// Encodes the frame: a kind byte, then the prost body.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, body): (u8, &dyn EncodeBody) = match self {
            Frame::Raft(m) => (KIND_RAFT, m),
            Frame::Hello(h) => (KIND_HELLO, h),
            Frame::Call(c) => (KIND_CALL, c),
            Frame::Answer(c) => (KIND_ANSWER, c),
        };
        let mut out = Vec::with_capacity(1 + body.len());
        out.push(kind);
        body.append_to(&mut out);
        out
    }

    /// Decodes a frame made by [`Frame::encode`].
    pub fn decode(frame: &[u8]) -> Result<Frame, WireError> {
        Ok(match frame.split_first() {
            Some((&KIND_RAFT, body)) => Frame::Raft(Message::decode(body)?),
            Some((&KIND_HELLO, body)) => Frame::Hello(Hello::decode(body)?),
            Some((&KIND_CALL, body)) => Frame::Call(Call::decode(body)?),
            Some((&KIND_ANSWER, body)) => Frame::Answer(Call::decode(body)?),
            other => return Err(WireError::Kind(other.map(|(k, _)| *k))),
        })
    }
}

/// Object-safe view of a prost message, for encoding any frame body the same way.
trait EncodeBody {
    fn len(&self) -> usize;
    fn append_to(&self, out: &mut Vec<u8>);
}

impl<M: prost::Message> EncodeBody for M {
    fn len(&self) -> usize {
        self.encoded_len()
    }
    fn append_to(&self, out: &mut Vec<u8>) {
        self.encode(out).expect("a Vec grows as needed");
    }
}

/// Encodes a Raft message as a frame.
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + msg.encoded_len());
    out.push(KIND_RAFT);
    msg.encode(&mut out).expect("a Vec grows as needed");
    out
}

/// Decodes a frame that must hold a Raft message.
pub fn decode(frame: &[u8]) -> Result<Message, WireError> {
    match Frame::decode(frame)? {
        Frame::Raft(msg) => Ok(msg),
        _ => Err(WireError::Kind(frame.first().copied())),
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
        assert_eq!(Frame::decode(&frame).unwrap(), Frame::Raft(msg));
        let hello = Frame::Hello(Hello { cluster_id: 7, member_id: 9 });
        assert_eq!(Frame::decode(&hello.encode()).unwrap(), hello);
        let answer = Frame::Answer(Call { call: 4, payload: b"p".to_vec() });
        assert_eq!(Frame::decode(&answer.encode()).unwrap(), answer);
        assert!(matches!(decode(&hello.encode()), Err(WireError::Kind(Some(KIND_HELLO)))));
        assert!(matches!(decode(&[]), Err(WireError::Kind(None))));
        assert!(matches!(decode(&[9, 1]), Err(WireError::Kind(Some(9)))));
        assert!(matches!(decode(&[KIND_RAFT, 0xff]), Err(WireError::Decode(_))));
    }
}
