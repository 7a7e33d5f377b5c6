//! gRPC's wire framing over HTTP/2, as Keel serves it, and the table of etcd's RPCs.
//!
//! A gRPC message travels as a 5-byte prefix (a compression flag, then the length as a
//! big-endian u32) and the protobuf bytes; a call ends with `grpc-status` and `grpc-message`
//! trailers. Keel does not compress, so a compressed frame is refused with `INTERNAL`, and a
//! frame over the receive limit with `RESOURCE_EXHAUSTED`, as grpc-go words them.

use crate::{Code, EtcdError};

/// Bytes of the length prefix.
pub const PREFIX: usize = 5;

/// How an RPC streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streaming {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    Server,
    /// Streams both ways.
    Bidi,
}

macro_rules! methods {
    ($($variant:ident => $path:literal, $kind:ident;)*) => {
        /// Every RPC of etcd's v3 API.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Method {
            $(
                #[doc = $path]
                $variant,
            )*
        }

        impl Method {
            /// Every method, in service order.
            pub const ALL: &'static [Method] = &[$(Method::$variant),*];

            /// The HTTP/2 path of the method.
            pub fn path(self) -> &'static str {
                match self {
                    $(Method::$variant => $path,)*
                }
            }

            /// How the method streams.
            pub fn streaming(self) -> Streaming {
                match self {
                    $(Method::$variant => Streaming::$kind,)*
                }
            }

            /// The method served at `path`, if any.
            pub fn from_path(path: &str) -> Option<Method> {
                match path {
                    $($path => Some(Method::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

methods! {
    Range => "/etcdserverpb.KV/Range", Unary;
    Put => "/etcdserverpb.KV/Put", Unary;
    DeleteRange => "/etcdserverpb.KV/DeleteRange", Unary;
    Txn => "/etcdserverpb.KV/Txn", Unary;
    Compact => "/etcdserverpb.KV/Compact", Unary;
    Watch => "/etcdserverpb.Watch/Watch", Bidi;
    LeaseGrant => "/etcdserverpb.Lease/LeaseGrant", Unary;
    LeaseRevoke => "/etcdserverpb.Lease/LeaseRevoke", Unary;
    LeaseKeepAlive => "/etcdserverpb.Lease/LeaseKeepAlive", Bidi;
    LeaseTimeToLive => "/etcdserverpb.Lease/LeaseTimeToLive", Unary;
    LeaseLeases => "/etcdserverpb.Lease/LeaseLeases", Unary;
    MemberAdd => "/etcdserverpb.Cluster/MemberAdd", Unary;
    MemberRemove => "/etcdserverpb.Cluster/MemberRemove", Unary;
    MemberUpdate => "/etcdserverpb.Cluster/MemberUpdate", Unary;
    MemberList => "/etcdserverpb.Cluster/MemberList", Unary;
    MemberPromote => "/etcdserverpb.Cluster/MemberPromote", Unary;
    Alarm => "/etcdserverpb.Maintenance/Alarm", Unary;
    Status => "/etcdserverpb.Maintenance/Status", Unary;
    Defragment => "/etcdserverpb.Maintenance/Defragment", Unary;
    Hash => "/etcdserverpb.Maintenance/Hash", Unary;
    HashKv => "/etcdserverpb.Maintenance/HashKV", Unary;
    Snapshot => "/etcdserverpb.Maintenance/Snapshot", Server;
    MoveLeader => "/etcdserverpb.Maintenance/MoveLeader", Unary;
    AuthEnable => "/etcdserverpb.Auth/AuthEnable", Unary;
    AuthDisable => "/etcdserverpb.Auth/AuthDisable", Unary;
    AuthStatus => "/etcdserverpb.Auth/AuthStatus", Unary;
    Authenticate => "/etcdserverpb.Auth/Authenticate", Unary;
    UserAdd => "/etcdserverpb.Auth/UserAdd", Unary;
    UserGet => "/etcdserverpb.Auth/UserGet", Unary;
    UserList => "/etcdserverpb.Auth/UserList", Unary;
    UserDelete => "/etcdserverpb.Auth/UserDelete", Unary;
    UserChangePassword => "/etcdserverpb.Auth/UserChangePassword", Unary;
    UserGrantRole => "/etcdserverpb.Auth/UserGrantRole", Unary;
    UserRevokeRole => "/etcdserverpb.Auth/UserRevokeRole", Unary;
    RoleAdd => "/etcdserverpb.Auth/RoleAdd", Unary;
    RoleGet => "/etcdserverpb.Auth/RoleGet", Unary;
    RoleList => "/etcdserverpb.Auth/RoleList", Unary;
    RoleDelete => "/etcdserverpb.Auth/RoleDelete", Unary;
    RoleGrantPermission => "/etcdserverpb.Auth/RoleGrantPermission", Unary;
    RoleRevokePermission => "/etcdserverpb.Auth/RoleRevokePermission", Unary;
}

/// How a call ended: the `grpc-status` code and `grpc-message` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// gRPC status code.
    pub code: Code,
    /// Human-readable message (clients match etcd's exactly).
    pub message: String,
}

impl Status {
    /// Success.
    pub fn ok() -> Status {
        Status { code: Code::Ok, message: String::new() }
    }

    /// A status with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status { code, message: message.into() }
    }

    /// The `grpc-status` trailer value.
    pub fn code_header(&self) -> &'static str {
        self.code.digits()
    }

    /// The `grpc-message` trailer value: percent-encoded as the gRPC spec requires (bytes
    /// outside printable ASCII, and `%` itself).
    pub fn message_header(&self) -> String {
        let mut out = String::with_capacity(self.message.len());
        for &b in self.message.as_bytes() {
            if (0x20..=0x7e).contains(&b) && b != b'%' {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }
}

impl From<&EtcdError> for Status {
    fn from(e: &EtcdError) -> Status {
        Status::new(e.code(), e.to_string())
    }
}

/// Frames one message for the wire.
pub fn frame(msg: &impl prost::Message) -> Vec<u8> {
    let len = msg.encoded_len();
    let mut out = Vec::with_capacity(PREFIX + len);
    out.push(0);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode(&mut out).expect("a Vec grows as needed");
    out
}

/// Frames an already encoded message for the wire.
pub fn frame_encoded(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX + message.len());
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// Splits a byte stream into gRPC messages, refusing any larger than the limit.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max_message: usize,
}

impl FrameDecoder {
    /// A decoder accepting messages of at most `max_message` bytes.
    pub fn new(max_message: usize) -> FrameDecoder {
        FrameDecoder { buf: Vec::new(), max_message }
    }

    /// Adds received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes received but not yet returned as a message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message, if one has arrived.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, Status> {
        if self.buf.len() < PREFIX {
            return Ok(None);
        }
        if self.buf[0] != 0 {
            // Keel takes no grpc-encoding but identity: grpc-go's answer to a compressed
            // message without one.
            return Err(Status::new(Code::Internal, "grpc: compressed flag set with identity or empty encoding"));
        }
        let len = u32::from_be_bytes(self.buf[1..PREFIX].try_into().expect("4 bytes")) as usize;
        if len > self.max_message {
            return Err(Status::new(
                Code::ResourceExhausted,
                format!("grpc: received message larger than max ({len} vs. {})", self.max_message),
            ));
        }
        if self.buf.len() < PREFIX + len {
            return Ok(None);
        }
        let message = self.buf[PREFIX..PREFIX + len].to_vec();
        self.buf.drain(..PREFIX + len);
        Ok(Some(message))
    }
}

/// A request's `grpc-timeout`, read as grpc-go reads it: up to 8 digits (with the sign Go's
/// integer parsing allows) and a unit, `H`, `M`, `S`, `m`, `u` or `n`. A negative timeout has
/// already passed (zero). The error is
/// grpc-go's complaint, for which it resets the stream.
pub fn parse_timeout(value: &str) -> Result<std::time::Duration, String> {
    use std::time::Duration;
    if value.len() < 2 {
        return Err(format!("transport: timeout string is too short: {value:?}"));
    }
    if value.len() > 9 {
        return Err(format!("transport: timeout string is too long: {value:?}"));
    }
    let (digits, unit) = value.as_bytes().split_at(value.len() - 1);
    let nanos_per_unit: u64 = match unit {
        b"H" => 3_600_000_000_000,
        b"M" => 60_000_000_000,
        b"S" => 1_000_000_000,
        b"m" => 1_000_000,
        b"u" => 1_000,
        b"n" => 1,
        _ => return Err(format!("transport: timeout unit is not recognized: {value:?}")),
    };
    // The unit is one ASCII byte, so what comes before it is the whole rest of the string.
    let digits = std::str::from_utf8(digits).expect("a string cut before an ASCII byte");
    let count: i32 = digits.parse().map_err(|e| format!("transport: malformed time-out {value:?}: {e}"))?;
    Ok(Duration::from_nanos(nanos_per_unit).saturating_mul(count.max(0) as u32))
}

/// Decodes a request message, answering `INTERNAL` for bytes that do not parse, as grpc-go
/// does (its message names the cause in the protobuf library's words, so only its prefix is
/// grpc-go's).
pub fn decode<M: prost::Message + Default>(bytes: &[u8]) -> Result<M, Status> {
    M::decode(bytes).map_err(|e| Status::new(Code::Internal, format!("grpc: error unmarshalling request: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcdserverpb::{PutRequest, RangeRequest};

    #[test]
    fn frames_split_and_rejoin() {
        let a = RangeRequest { key: b"a".to_vec(), limit: 3, ..Default::default() };
        let b = PutRequest { key: b"k".to_vec(), value: vec![7; 300], ..Default::default() };
        let mut wire = frame(&a);
        wire.extend(frame_encoded(&prost::Message::encode_to_vec(&b)));
        let mut decoder = FrameDecoder::new(1024);
        let mut got = Vec::new();
        for chunk in wire.chunks(7) {
            decoder.push(chunk);
            while let Some(m) = decoder.next_message().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(decode::<RangeRequest>(&got[0]).unwrap(), a);
        assert_eq!(decode::<PutRequest>(&got[1]).unwrap(), b);
        assert_eq!(decoder.pending(), 0);
    }

    #[test]
    fn oversized_and_compressed_frames_are_refused() {
        let mut decoder = FrameDecoder::new(10);
        decoder.push(&frame(&PutRequest { key: vec![1; 20], ..Default::default() }));
        let err = decoder.next_message().unwrap_err();
        assert_eq!(err.code, Code::ResourceExhausted);
        assert_eq!(err.message, "grpc: received message larger than max (22 vs. 10)");
        let mut decoder = FrameDecoder::new(10);
        decoder.push(&[1, 0, 0, 0, 0]);
        assert_eq!(decoder.next_message().unwrap_err().code, Code::Internal);
    }

    #[test]
    fn timeouts_read_as_grpc_go_reads_them() {
        use std::time::Duration;
        assert_eq!(parse_timeout("5S"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_timeout("99999999H"), Ok(Duration::from_secs(99_999_999 * 3600)));
        assert_eq!(parse_timeout("250m"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_timeout("7n"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse_timeout("+3u"), Ok(Duration::from_micros(3)));
        assert_eq!(parse_timeout("-1S"), Ok(Duration::ZERO), "already passed");
        for bad in ["", "S", "123456789S", "10x", "1.5S", "abS", "999H葽", "葽S"] {
            assert!(parse_timeout(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn method_table_round_trips_and_status_headers_encode() {
        for &m in Method::ALL {
            assert_eq!(Method::from_path(m.path()), Some(m));
        }
        assert_eq!(Method::from_path("/etcdserverpb.KV/Nope"), None);
        assert_eq!(Method::Watch.streaming(), Streaming::Bidi);
        let status = Status::from(&EtcdError::Compacted);
        assert_eq!(status.code_header(), "11");
        let codes = [
            Code::Ok,
            Code::Unknown,
            Code::InvalidArgument,
            Code::DeadlineExceeded,
            Code::NotFound,
            Code::ResourceExhausted,
            Code::FailedPrecondition,
            Code::OutOfRange,
            Code::Unimplemented,
            Code::Internal,
            Code::Unavailable,
        ];
        for code in codes {
            assert_eq!(code.digits(), (code as u32).to_string(), "{code:?}");
        }
        assert_eq!(Status::new(Code::Unknown, "50% é").message_header(), "50%25 %C3%A9");
    }
}
