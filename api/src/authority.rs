//! Repairs the `:authority` that some etcd clients send, before the HTTP/2 server sees it.
//!
//! etcdctl 3.4 (grpc-go with a `passthrough` target) sends the endpoint URL itself as
//! `:authority`, e.g. `http://127.0.0.1:2379`, for `endpoint status`, `endpoint hashkv` and
//! `defrag`. Go's HTTP/2 server lets that through; the `h2` crate rejects it as a malformed
//! authority (RST_STREAM PROTOCOL_ERROR), and its maintainers decline to relax the check
//! (hyperium/h2#525). [`AuthorityFix`] sits on the client-to-server byte stream: it passes
//! every frame through untouched except header blocks, which it decodes with the client's
//! HPACK state, strips a `scheme://` prefix from `:authority`, and re-encodes as literals that
//! never enter the server's dynamic table (so the two HPACK contexts stay consistent).
//!
//! A client sends one authority for the life of a connection, so the first request decides:
//! if its `:authority` needs no repair, its block goes out byte for byte and so does the rest
//! of the connection (both HPACK contexts saw identical blocks); otherwise every later block
//! is rewritten too. Well-behaved clients thus pay for one decode per connection.
//!
//! Invariant: every byte in is either passed out in order or held until the frame it belongs
//! to is complete; header blocks (HEADERS plus CONTINUATION frames) come out as one block
//! split at the default maximum frame size.
//!
//! Limits, so that no client can make the fix hold or build more than a few header lists'
//! worth of memory: a frame is at most the maximum frame size the server advertises, a
//! header block at most [`MAX_HEADER_LIST_BYTES`] as sent (anything larger is refused and
//! the connection closed), and the dynamic table at most the size the server advertises.
//! HPACK lets a small block name a table entry again and again, so a block's decoded size is
//! bounded only by this count: once a block's header list passes [`MAX_HEADER_LIST_BYTES`],
//! the rest of it is decoded (to keep the HPACK state) but not written out again. The block
//! that goes to the server then still lists more than that many bytes, so the server, which
//! is configured with the same bound, refuses that one request and goes on serving the
//! connection.

use loona_hpack::encoder::encode_integer_into;
use loona_hpack::Decoder;

/// The HTTP/2 client connection preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// SETTINGS_MAX_FRAME_SIZE's initial value, which the server keeps: a larger frame is a
/// connection error.
const MAX_FRAME: usize = 16_384;
/// SETTINGS_HEADER_TABLE_SIZE's initial value, which the server keeps: the most a client's
/// dynamic table may hold.
const HEADER_TABLE_BYTES: usize = 4_096;
/// The largest header list a request may carry, counted as HTTP/2 counts it (each field's
/// name and value plus 32 bytes); the server must be configured with the same bound
/// (SETTINGS_MAX_HEADER_LIST_SIZE). etcd's clients send well under 1 KiB (a token, a user
/// agent, a timeout); grpc-go allows 16 MiB, which would let each connection hold that much.
pub const MAX_HEADER_LIST_BYTES: usize = 64 * 1024;

/// Why the byte stream cannot be repaired; the connection must be closed.
#[derive(Debug, thiserror::Error)]
pub enum AuthorityFixError {
    /// The client did not open with the HTTP/2 preface.
    #[error("not an HTTP/2 connection preface")]
    Preface,
    /// Frames are out of order or malformed.
    #[error("malformed HTTP/2 frame: {0}")]
    Frame(&'static str),
    /// The header block does not decode.
    #[error("undecodable header block: {0}")]
    Hpack(#[from] loona_hpack::decoder::DecoderError),
}

/// A header block being collected from HEADERS and CONTINUATION frames.
struct OpenBlock {
    stream: u32,
    end_stream: bool,
    fragment: Vec<u8>,
}

/// Whether the connection's header blocks are rewritten.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No request seen yet.
    Undecided,
    /// The first request's authority was fine: everything passes through unchanged.
    PassThrough,
    /// The first request's authority needed repair: every block is rewritten.
    Rewrite,
}

/// The client-to-server rewriter of one connection.
pub struct AuthorityFix {
    preface_seen: usize,
    pending: Vec<u8>,
    block: Option<OpenBlock>,
    decoder: Decoder<'static>,
    mode: Mode,
}

impl Default for AuthorityFix {
    fn default() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_BYTES);
        AuthorityFix { preface_seen: 0, pending: Vec::new(), block: None, decoder, mode: Mode::Undecided }
    }
}

/// `:authority` without a `scheme://` prefix or a trailing slash.
fn repaired(authority: &[u8]) -> &[u8] {
    let text = authority.windows(3).position(|w| w == b"://").map_or(authority, |at| &authority[at + 3..]);
    text.strip_suffix(b"/").unwrap_or(text)
}

/// Appends an HPACK string literal (no Huffman coding).
fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    encode_integer_into(bytes.len(), 7, 0, out).expect("a Vec grows as needed");
    out.extend_from_slice(bytes);
}

fn put_frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
}

impl AuthorityFix {
    /// Whether every byte from now on passes through unchanged, with nothing held back: the
    /// caller may then hand the client's bytes to the server without [`AuthorityFix::push`].
    pub fn passes_through(&self) -> bool {
        self.mode == Mode::PassThrough && self.pending.is_empty()
    }

    /// Feeds bytes read from the client; appends what the server should read to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), AuthorityFixError> {
        let mut input = input;
        if self.preface_seen < PREFACE.len() {
            let take = input.len().min(PREFACE.len() - self.preface_seen);
            if input[..take] != PREFACE[self.preface_seen..self.preface_seen + take] {
                return Err(AuthorityFixError::Preface);
            }
            out.extend_from_slice(&input[..take]);
            self.preface_seen += take;
            input = &input[take..];
        }
        if self.mode == Mode::PassThrough {
            out.append(&mut self.pending);
            out.extend_from_slice(input);
            return Ok(());
        }
        self.pending.extend_from_slice(input);
        let mut at = 0;
        while self.mode != Mode::PassThrough && self.pending.len() - at >= FRAME_HEADER {
            let header = &self.pending[at..at + FRAME_HEADER];
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            if len > MAX_FRAME {
                return Err(AuthorityFixError::Frame("frame larger than the maximum frame size"));
            }
            if self.pending.len() - at < FRAME_HEADER + len {
                break;
            }
            let (kind, flags) = (header[3], header[4]);
            let stream = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            let frame_end = at + FRAME_HEADER + len;
            let payload = &self.pending[at + FRAME_HEADER..frame_end];
            match (kind, self.block.as_mut()) {
                (HEADERS, None) => {
                    let fragment = header_fragment(payload, flags)?;
                    self.block =
                        Some(OpenBlock { stream, end_stream: flags & END_STREAM != 0, fragment: fragment.to_vec() });
                }
                (CONTINUATION, Some(block)) if block.stream == stream => {
                    if block.fragment.len() + payload.len() > MAX_HEADER_LIST_BYTES {
                        return Err(AuthorityFixError::Frame("header block larger than the header list limit"));
                    }
                    block.fragment.extend_from_slice(payload);
                }
                (_, Some(_)) => return Err(AuthorityFixError::Frame("header block interrupted")),
                (CONTINUATION, None) => return Err(AuthorityFixError::Frame("CONTINUATION without HEADERS")),
                _ => out.extend_from_slice(&self.pending[at..frame_end]),
            }
            if matches!(kind, HEADERS | CONTINUATION) && flags & END_HEADERS != 0 {
                let block = self.block.take().expect("a block is open");
                self.emit(&block, out)?;
            }
            at = frame_end;
        }
        self.pending.drain(..at);
        if self.mode == Mode::PassThrough {
            out.append(&mut self.pending);
        }
        Ok(())
    }

    /// Decodes a complete header block and writes it out: unchanged if the connection passes
    /// through, re-encoded otherwise (cut short once its header list is over the limit).
    fn emit(&mut self, block: &OpenBlock, out: &mut Vec<u8>) -> Result<(), AuthorityFixError> {
        let mut encoded = Vec::with_capacity(block.fragment.len() + 32);
        let mut repairs = false;
        let mut list_bytes = 0usize;
        self.decoder.decode_with_cb(&block.fragment, |name, value| {
            if list_bytes > MAX_HEADER_LIST_BYTES {
                return; // already too large to serve: decoded only to keep the HPACK state
            }
            list_bytes += name.len() + value.len() + 32;
            let fixed: &[u8] = if &*name == b":authority" { repaired(&value) } else { &value };
            repairs |= fixed.len() != value.len();
            // Literal header field without indexing, new name (RFC 7541 §6.2.2).
            encoded.push(0);
            put_string(&mut encoded, &name);
            put_string(&mut encoded, fixed);
        })?;
        let too_large = list_bytes > MAX_HEADER_LIST_BYTES;
        // The fields written out list at most one field more than the limit (a table entry,
        // or a literal of the block, which Huffman coding shrinks to no less than 5/8): over
        // it, so the server refuses the request, and bounded.
        debug_assert!(encoded.len() <= 3 * MAX_HEADER_LIST_BYTES + HEADER_TABLE_BYTES);
        if self.mode == Mode::Undecided {
            // A block cut short leaves the server's HPACK state behind the client's for good.
            self.mode = if repairs || too_large { Mode::Rewrite } else { Mode::PassThrough };
        }
        let payload = if self.mode == Mode::PassThrough { &block.fragment } else { &encoded };
        let mut chunks = payload.chunks(MAX_FRAME).peekable();
        let mut kind = HEADERS;
        let end_stream = if block.end_stream { END_STREAM } else { 0 };
        loop {
            let chunk = chunks.next().unwrap_or(&[]);
            let last = chunks.peek().is_none();
            let flags = if kind == HEADERS { end_stream } else { 0 } | if last { END_HEADERS } else { 0 };
            put_frame_header(out, chunk.len(), kind, flags, block.stream);
            out.extend_from_slice(chunk);
            if last {
                return Ok(());
            }
            kind = CONTINUATION;
        }
    }
}

/// The header block fragment of a HEADERS frame, without padding and priority fields.
fn header_fragment(payload: &[u8], flags: u8) -> Result<&[u8], AuthorityFixError> {
    let mut fragment = payload;
    let mut padding = 0;
    if flags & PADDED != 0 {
        let (&pad, rest) = fragment.split_first().ok_or(AuthorityFixError::Frame("PADDED HEADERS too short"))?;
        padding = pad as usize;
        fragment = rest;
    }
    if flags & PRIORITY != 0 {
        fragment = fragment.get(5..).ok_or(AuthorityFixError::Frame("PRIORITY HEADERS too short"))?;
    }
    let end = fragment.len().checked_sub(padding).ok_or(AuthorityFixError::Frame("padding longer than the frame"))?;
    Ok(&fragment[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use loona_hpack::Encoder;

    fn headers_frame(out: &mut Vec<u8>, block: &[u8], flags: u8, stream: u32) {
        put_frame_header(out, block.len(), HEADERS, flags, stream);
        out.extend_from_slice(block);
    }

    type Headers = Vec<(Vec<u8>, Vec<u8>)>;

    /// Decodes every header block of a rewritten stream (after the preface): each frame's
    /// flags (HEADERS) or kind (others), with its headers.
    fn blocks(mut stream: &[u8]) -> Vec<(u8, Headers)> {
        let mut decoder = Decoder::new();
        let mut found = Vec::new();
        stream = &stream[PREFACE.len()..];
        while !stream.is_empty() {
            let len = u32::from_be_bytes([0, stream[0], stream[1], stream[2]]) as usize;
            let (kind, flags) = (stream[3], stream[4]);
            let payload = &stream[FRAME_HEADER..FRAME_HEADER + len];
            if kind == HEADERS {
                found.push((flags, decoder.decode(payload).expect("decodes")));
            } else {
                found.push((kind, Vec::new()));
            }
            stream = &stream[FRAME_HEADER + len..];
        }
        found
    }

    #[test]
    fn strips_the_scheme_from_authority_and_keeps_everything_else() {
        let mut client = Encoder::new();
        let mut input = PREFACE.to_vec();
        // A SETTINGS frame passes through as it is.
        put_frame_header(&mut input, 0, 0x4, 0, 0);
        let request: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", b"/etcdserverpb.Maintenance/Status"),
            (b":authority", b"http://127.0.0.1:2379"),
            (b"content-type", b"application/grpc"),
        ];
        headers_frame(&mut input, &client.encode(request.clone()), END_HEADERS, 1);
        // The second request reuses the client's dynamic table; split over CONTINUATION.
        let second = client.encode(request);
        put_frame_header(&mut input, 2, HEADERS, END_STREAM, 3);
        input.extend_from_slice(&second[..2]);
        put_frame_header(&mut input, second.len() - 2, CONTINUATION, END_HEADERS, 3);
        input.extend_from_slice(&second[2..]);

        // Fed one byte at a time, to cross every boundary.
        let mut fix = AuthorityFix::default();
        let mut out = Vec::new();
        for byte in &input {
            fix.push(std::slice::from_ref(byte), &mut out).expect("repairable");
        }
        let found = blocks(&out);
        assert_eq!(found.len(), 3);
        assert_eq!(found[0], (0x4, Vec::new()));
        for (i, (flags, headers)) in found[1..].iter().enumerate() {
            assert_eq!(*flags, if i == 0 { END_HEADERS } else { END_HEADERS | END_STREAM });
            let authority = headers.iter().find(|(n, _)| n == b":authority").expect("authority");
            assert_eq!(authority.1, b"127.0.0.1:2379");
            assert_eq!(headers.len(), 5);
            assert_eq!(headers[2].1, b"/etcdserverpb.Maintenance/Status");
        }
    }

    #[test]
    fn a_connection_whose_first_authority_is_fine_passes_through_unchanged() {
        let mut client = Encoder::new();
        let request: Vec<(&[u8], &[u8])> =
            vec![(b":method", b"POST"), (b":path", b"/etcdserverpb.KV/Put"), (b":authority", b"127.0.0.1:2379")];
        let mut input = PREFACE.to_vec();
        headers_frame(&mut input, &client.encode(request.clone()), END_HEADERS, 1);
        put_frame_header(&mut input, 3, 0x0, END_STREAM, 1);
        input.extend_from_slice(b"abc");
        // A later authority that would need repair is not looked at any more.
        let later = client.encode(vec![(&b":authority"[..], &b"http://127.0.0.1:2379"[..])]);
        headers_frame(&mut input, &later, END_HEADERS, 3);
        let mut fix = AuthorityFix::default();
        let mut out = Vec::new();
        let mut chunks = input.chunks(5);
        for chunk in chunks.by_ref() {
            assert!(!fix.passes_through(), "decided only once the first header block is complete");
            fix.push(chunk, &mut out).expect("passes");
            if out.len() > PREFACE.len() + 9 {
                break; // the first HEADERS frame is out
            }
        }
        assert!(fix.passes_through());
        for chunk in chunks {
            fix.push(chunk, &mut out).expect("passes");
            assert!(fix.passes_through());
        }
        assert_eq!(out, input);
    }

    /// A HEADERS block of `fragment`, split over CONTINUATION frames of at most `MAX_FRAME`.
    fn header_block(out: &mut Vec<u8>, fragment: &[u8], stream: u32) {
        let mut chunks = fragment.chunks(MAX_FRAME).peekable();
        let mut kind = HEADERS;
        while let Some(chunk) = chunks.next() {
            let flags = if chunks.peek().is_none() { END_HEADERS } else { 0 };
            put_frame_header(out, chunk.len(), kind, flags, stream);
            out.extend_from_slice(chunk);
            kind = CONTINUATION;
        }
    }

    /// The header list size of `headers`, as HTTP/2 counts it.
    fn list_bytes(headers: &Headers) -> usize {
        headers.iter().map(|(n, v)| n.len() + v.len() + 32).sum()
    }

    #[test]
    fn a_header_list_over_the_limit_goes_out_cut_short_and_later_requests_still_decode() {
        // One 4000-byte field entered in the dynamic table, then named 5000 times by one byte
        // each: 9 KB on the wire, 20 MB decoded.
        let mut bomb = vec![0x40];
        put_string(&mut bomb, b"x-big");
        put_string(&mut bomb, &[b'a'; 4000]);
        bomb.extend(std::iter::repeat_n(0x80 | 62, 5000));
        let mut input = PREFACE.to_vec();
        header_block(&mut input, &bomb, 1);
        // The next request names the same table entry once, as its client's HPACK state allows.
        let mut next = vec![0];
        put_string(&mut next, b":path");
        put_string(&mut next, b"/etcdserverpb.KV/Range");
        next.push(0x80 | 62);
        headers_frame(&mut input, &next, END_HEADERS, 3);

        let mut fix = AuthorityFix::default();
        let mut out = Vec::new();
        for chunk in input.chunks(1000) {
            fix.push(chunk, &mut out).expect("a large list is the server's to refuse, not a broken stream");
        }
        assert!(out.len() < 3 * MAX_HEADER_LIST_BYTES, "bounded output: {} bytes", out.len());
        // Decoded as the server decodes them, with a fresh HPACK state.
        let mut decoder = Decoder::new();
        let mut stream = &out[PREFACE.len()..];
        let mut lists = Vec::new();
        let mut block = Vec::new();
        while !stream.is_empty() {
            let len = u32::from_be_bytes([0, stream[0], stream[1], stream[2]]) as usize;
            block.extend_from_slice(&stream[FRAME_HEADER..FRAME_HEADER + len]);
            if stream[4] & END_HEADERS != 0 {
                lists.push(decoder.decode(&block).expect("decodes"));
                block.clear();
            }
            stream = &stream[FRAME_HEADER + len..];
        }
        assert_eq!(lists.len(), 2);
        assert!(list_bytes(&lists[0]) > MAX_HEADER_LIST_BYTES, "still over the limit, so the server refuses it");
        assert_eq!(
            lists[1],
            vec![(b":path".to_vec(), b"/etcdserverpb.KV/Range".to_vec()), (b"x-big".to_vec(), vec![b'a'; 4000])]
        );
    }

    #[test]
    fn oversized_frames_blocks_and_tables_are_refused() {
        let refused = |input: &[u8]| {
            let mut stream = PREFACE.to_vec();
            stream.extend_from_slice(input);
            let result = AuthorityFix::default().push(&stream, &mut Vec::new());
            matches!(result, Err(AuthorityFixError::Frame(_) | AuthorityFixError::Hpack(_)))
        };
        let mut frame = Vec::new();
        put_frame_header(&mut frame, MAX_FRAME + 1, 0x0, 0, 1);
        assert!(refused(&frame), "a frame over the maximum frame size");
        let mut block = Vec::new();
        for i in 0..MAX_HEADER_LIST_BYTES / 1000 + 1 {
            block.push(0);
            put_string(&mut block, format!("x-{i}").as_bytes());
            put_string(&mut block, &[b'v'; 1000]);
        }
        let mut blocks = Vec::new();
        header_block(&mut blocks, &block, 1);
        assert!(refused(&blocks), "a header block over the limit as sent");
        // A dynamic table size update beyond the advertised table size (RFC 7541 §4.2).
        let mut resize = Vec::new();
        encode_integer_into(HEADER_TABLE_BYTES + 1, 5, 0x20, &mut resize).unwrap();
        let mut frame = Vec::new();
        headers_frame(&mut frame, &resize, END_HEADERS, 1);
        assert!(refused(&frame), "a table larger than the server allows");
    }

    #[test]
    fn refuses_what_is_not_http2() {
        let mut out = Vec::new();
        assert!(matches!(
            AuthorityFix::default().push(b"GET / HTTP/1.1\r\n", &mut out),
            Err(AuthorityFixError::Preface)
        ));
        let mut input = PREFACE.to_vec();
        put_frame_header(&mut input, 1, CONTINUATION, END_HEADERS, 1);
        input.push(0);
        assert!(matches!(AuthorityFix::default().push(&input, &mut out), Err(AuthorityFixError::Frame(_))));
        assert_eq!(repaired(b"unix:///tmp/s/"), b"/tmp/s");
        assert_eq!(repaired(b"localhost:2379"), b"localhost:2379");
    }
}
