//! HTTP/2 written and read frame by frame, for clients that misbehave on purpose: frames no
//! library would send, or a client that reads the socket but never opens a window for what
//! it was sent.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use loona_hpack::Encoder;

/// The HTTP/2 client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;
pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
/// The initial flow-control window of every stream and of the connection.
pub const INITIAL_WINDOW: u64 = 65_535;

/// One frame: kind, flags, stream and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// A frame's bytes on the wire.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The header block of a gRPC call to `path` at `authority`.
pub fn call_headers(encoder: &mut Encoder<'_>, authority: &str, path: &str) -> Vec<u8> {
    let headers: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.as_bytes()),
        (b":authority", authority.as_bytes()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ];
    encoder.encode(headers)
}

/// A raw HTTP/2 connection: the preface and an empty SETTINGS frame sent.
pub struct Connection {
    pub tcp: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    /// Connects to `address` (`host:port`) and opens HTTP/2.
    pub fn open(address: &str) -> Connection {
        let tcp = TcpStream::connect(address).expect("connects");
        tcp.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
        let mut connection = Connection { tcp, buffer: Vec::new() };
        connection.send(&[PREFACE, &frame(SETTINGS, 0, 0, &[])].concat());
        connection
    }

    /// Writes `bytes`; false if the server closed the connection.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.tcp.write_all(bytes).is_ok()
    }

    /// The next frame from the server (answering its SETTINGS and PINGs on the way); None
    /// once the connection is closed.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.buffered_frame() {
                return Some(frame);
            }
            if !self.fill() {
                return None;
            }
        }
    }

    /// The frames the server has sent that can be read without waiting; None once the
    /// connection is closed.
    pub fn ready_frames(&mut self) -> Option<Vec<Frame>> {
        self.tcp.set_nonblocking(true).expect("non-blocking");
        let mut open = true;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.tcp.read(&mut chunk) {
                Ok(0) => open = false,
                Ok(n) => {
                    self.buffer.extend_from_slice(&chunk[..n]);
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => open = false,
            }
            break;
        }
        self.tcp.set_nonblocking(false).expect("blocking");
        let frames: Vec<Frame> = std::iter::from_fn(|| self.buffered_frame()).collect();
        (open || !frames.is_empty()).then_some(frames)
    }

    /// Reads more from the socket; false once it is closed.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.tcp.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// A whole frame read already, answering SETTINGS and PING as a client must.
    fn buffered_frame(&mut self) -> Option<Frame> {
        if self.buffer.len() < 9 {
            return None;
        }
        let len = u32::from_be_bytes([0, self.buffer[0], self.buffer[1], self.buffer[2]]) as usize;
        if self.buffer.len() < 9 + len {
            return None;
        }
        let header: Vec<u8> = self.buffer.drain(..9).collect();
        let payload: Vec<u8> = self.buffer.drain(..len).collect();
        let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
        let frame = Frame { kind: header[3], flags: header[4], stream, payload };
        match (frame.kind, frame.flags & ACK) {
            (SETTINGS, 0) => {
                self.send(&self::frame(SETTINGS, ACK, 0, &[]));
            }
            (PING, 0) => {
                self.send(&self::frame(PING, ACK, 0, &frame.payload));
            }
            _ => {}
        }
        Some(frame)
    }

    /// Frames until one for `stream` that ends it (END_STREAM or RST_STREAM), or the end of
    /// the connection; every frame read on the way is returned.
    pub fn until_stream_ends(&mut self, stream: u32) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next_frame() {
            let ends = frame.stream == stream
                && (frame.kind == RST_STREAM
                    || (matches!(frame.kind, DATA | HEADERS) && frame.flags & END_STREAM != 0));
            let goaway = frame.kind == GOAWAY;
            frames.push(frame);
            if ends || goaway {
                break;
            }
        }
        frames
    }
}

/// How much a client may still send: the connection's window and each stream's, as the
/// server's SETTINGS and WINDOW_UPDATE frames grant them.
#[derive(Debug)]
pub struct Windows {
    pub connection: u64,
    pub stream_initial: u64,
    pub streams: std::collections::BTreeMap<u32, u64>,
}

impl Default for Windows {
    fn default() -> Windows {
        Windows { connection: INITIAL_WINDOW, stream_initial: INITIAL_WINDOW, streams: Default::default() }
    }
}

impl Windows {
    /// Takes what a frame from the server grants.
    pub fn grant(&mut self, frame: &Frame) {
        match frame.kind {
            WINDOW_UPDATE => {
                let increment = u32::from_be_bytes(frame.payload[..4].try_into().expect("4 bytes")) & 0x7fff_ffff;
                match frame.stream {
                    0 => self.connection += u64::from(increment),
                    stream => *self.streams.entry(stream).or_insert(self.stream_initial) += u64::from(increment),
                }
            }
            SETTINGS if frame.flags & ACK == 0 => {
                for setting in frame.payload.chunks(6) {
                    if setting[..2] == [0, 4] {
                        let size = u32::from_be_bytes(setting[2..6].try_into().expect("4 bytes"));
                        self.stream_initial = u64::from(size);
                    }
                }
            }
            _ => {}
        }
    }

    /// How many bytes of DATA `stream` may carry now.
    pub fn open(&self, stream: u32) -> u64 {
        self.connection.min(self.streams.get(&stream).copied().unwrap_or(self.stream_initial))
    }

    /// Records `bytes` of DATA sent on `stream`.
    pub fn spend(&mut self, stream: u32, bytes: u64) {
        self.connection -= bytes;
        *self.streams.entry(stream).or_insert(self.stream_initial) -= bytes;
    }
}
