//! Peer frames, fuzzed (see `keel-fuzz`): whatever a peer connection delivers must decode to
//! a frame or an error, never a panic, and a frame that decodes must encode back to itself.

use keel_fuzz::fuzz;
use keel_net::{Call, Frame, Hello};
use keel_raft::{Entry, Message, MessageType};

#[test]
fn peer_frames() {
    let mut append = Message::new(MessageType::Append, 1, 2);
    append.term = 3;
    append.index = 7;
    append.entries = vec![Entry::normal(b"an entry".to_vec()), Entry::normal(vec![0; 30])];
    let examples = vec![
        Frame::Raft(append).encode(),
        Frame::Hello(Hello { cluster_id: 7, member_id: 9 }).encode(),
        Frame::Call(Call { call: 4, payload: b"a forwarded call".to_vec() }).encode(),
        Frame::Answer(Call { call: 4, payload: vec![1, 2, 3] }).encode(),
    ];
    fuzz("peer frames", &examples, |bytes| {
        if let Ok(frame) = Frame::decode(bytes) {
            assert_eq!(Frame::decode(&frame.encode()).expect("an encoding decodes"), frame);
        }
    });
}
