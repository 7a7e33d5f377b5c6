//! The peer transport between `keel` processes: TCP on a glommio executor.
//!
//! Each peer gets its own bounded outbox and writer task. The writer connects (retrying with
//! exponential backoff), opens with a [`Hello`], and then writes whatever is queued in
//! batches: one socket write for everything queued meanwhile. A full outbox drops the frame
//! (Raft resends), and frames queued while a peer is unreachable are dropped when a connect
//! fails, so a slow or dead peer never blocks the node or the other peers. Connections are
//! one-way: a member writes on the connections it opened and reads on those it accepted.
//!
//! On the wire, every frame is a big-endian `u32` length and then [`Frame::encode`]'s bytes.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use futures::StreamExt;
use glommio::net::{TcpListener, TcpStream};
use keel_raft::Message;
use socket2::{Domain, Protocol, Socket, Type};

use crate::{Frame, Hello, Transport};

/// Frames queued per peer before new ones are dropped.
const OUTBOX_FRAMES: usize = 4096;
/// A batch is written once it reaches this many bytes.
const BATCH_BYTES: usize = 1 << 20;
/// Largest frame accepted (a snapshot of the whole store travels as one frame).
const MAX_FRAME_BYTES: usize = 1 << 30;
/// Largest first frame, the [`Hello`]: until it checks out, a connection is anyone's.
const MAX_HELLO_BYTES: usize = 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Sends frames to peers over TCP. Create it inside a glommio executor.
pub struct TcpTransport {
    outboxes: BTreeMap<u64, mpsc::Sender<Vec<u8>>>,
}

impl TcpTransport {
    /// Starts one writer task per peer (`member id → addresses`; the first that connects is
    /// used). `hello` introduces this member on every connection.
    pub fn start(hello: Hello, peers: BTreeMap<u64, Vec<SocketAddr>>) -> TcpTransport {
        let hello = Rc::new(hello);
        let mut outboxes = BTreeMap::new();
        for (id, addrs) in peers {
            let (tx, rx) = mpsc::channel(OUTBOX_FRAMES);
            glommio::spawn_local(write_to_peer(id, addrs, hello.clone(), rx)).detach();
            outboxes.insert(id, tx);
        }
        TcpTransport { outboxes }
    }

    /// Queues a frame for member `to`; dropped if `to` is unknown or its outbox is full.
    pub fn send_frame(&mut self, to: u64, frame: &Frame) {
        let Some(outbox) = self.outboxes.get_mut(&to) else {
            tracing::debug!(to, "no address for peer; frame dropped");
            return;
        };
        if let Err(e) = outbox.try_send(frame.encode()) {
            if e.is_full() {
                tracing::debug!(to, "peer outbox full; frame dropped");
            }
        }
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, msg: Message) {
        let to = msg.to;
        self.send_frame(to, &Frame::Raft(msg));
    }
}

async fn connect(addrs: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "peer has no address");
    for addr in addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT).await {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last = e.into(),
        }
    }
    Err(last)
}

fn put_frame(buffer: &mut Vec<u8>, frame: &[u8]) {
    buffer.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    buffer.extend_from_slice(frame);
}

/// The writer task of one peer: runs until the transport is dropped.
async fn write_to_peer(id: u64, addrs: Vec<SocketAddr>, hello: Rc<Hello>, mut outbox: mpsc::Receiver<Vec<u8>>) {
    let mut backoff = FIRST_BACKOFF;
    let mut buffer = Vec::new();
    loop {
        let mut stream = match connect(&addrs).await {
            Ok(stream) => {
                tracing::info!(peer = format_args!("{id:x}"), "connected to peer");
                backoff = FIRST_BACKOFF;
                stream
            }
            Err(e) => {
                tracing::debug!(peer = format_args!("{id:x}"), "cannot reach peer: {e}");
                // What was queued for an unreachable peer is stale by the time it is back.
                while outbox.try_recv().is_ok() {}
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        buffer.clear();
        put_frame(&mut buffer, &Frame::Hello((*hello).clone()).encode());
        loop {
            if buffer.is_empty() {
                match outbox.next().await {
                    Some(frame) => put_frame(&mut buffer, &frame),
                    None => return,
                }
            }
            while buffer.len() < BATCH_BYTES {
                match outbox.try_recv() {
                    Ok(frame) => put_frame(&mut buffer, &frame),
                    Err(e) if e.is_empty() => break,
                    Err(_) => return,
                }
            }
            if let Err(e) = stream.write_all(&buffer).await {
                tracing::info!(peer = format_args!("{id:x}"), "lost connection to peer: {e}");
                break;
            }
            buffer.clear();
        }
    }
}

/// A listener on `addr` for the current glommio executor. Like etcd (Go's listeners), it sets
/// `SO_REUSEADDR` so a restarted member can bind while connections of its previous run linger
/// in `TIME_WAIT`, and not `SO_REUSEPORT` (glommio's own `bind` sets that, which lets a second
/// process bind the same port and take half the connections, and still fails beside another
/// program's `TIME_WAIT` sockets).
#[expect(unsafe_code, reason = "glommio adopts a listening socket only through FromRawFd")]
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    // SAFETY: the descriptor is a bound, listening TCP socket whose ownership moves to the
    // listener (`into_raw_fd` gives it up here).
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// Accepts peer connections on `addr`, calling `deliver` with the sender's member id and
/// each frame it sends, its [`Hello`] first. Connections whose first frame is not a `Hello`
/// from `cluster_id` are closed.
pub fn listen(addr: SocketAddr, cluster_id: u64, deliver: impl Fn(u64, Frame) + 'static) -> io::Result<()> {
    let listener = bind(addr)?;
    let deliver = Rc::new(deliver);
    glommio::spawn_local(async move {
        loop {
            let stream = match listener.accept().await {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!("accepting a peer connection failed: {e}");
                    continue;
                }
            };
            let deliver = deliver.clone();
            glommio::spawn_local(async move {
                if let Err(e) = read_from_peer(stream, cluster_id, &*deliver).await {
                    tracing::debug!("peer connection closed: {e}");
                }
            })
            .detach();
        }
    })
    .detach();
    Ok(())
}

/// Reads one frame of at most `max_bytes`. The buffer grows only as the frame's bytes arrive:
/// a length alone makes the member hold nothing.
async fn read_frame(reader: &mut BufReader<TcpStream>, scratch: &mut Vec<u8>, max_bytes: usize) -> io::Result<Frame> {
    let mut len = [0u8; 4];
    reader.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max_bytes {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("peer frame of {len} bytes is too large")));
    }
    scratch.clear();
    (&mut *reader).take(len as u64).read_to_end(scratch).await?;
    if scratch.len() < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Frame::decode(scratch).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn read_from_peer(stream: TcpStream, cluster_id: u64, deliver: &dyn Fn(u64, Frame)) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    let mut scratch = Vec::new();
    let hello = match read_frame(&mut reader, &mut scratch, MAX_HELLO_BYTES).await? {
        Frame::Hello(hello) if hello.cluster_id == cluster_id => hello,
        Frame::Hello(hello) => {
            tracing::warn!(
                peer = format_args!("{:x}", hello.member_id),
                "refused a peer from cluster {:x} (this is cluster {cluster_id:x})",
                hello.cluster_id
            );
            return Ok(());
        }
        _ => return Err(io::Error::new(io::ErrorKind::InvalidData, "peer did not open with a hello")),
    };
    let from = hello.member_id;
    deliver(from, Frame::Hello(hello));
    loop {
        let frame = read_frame(&mut reader, &mut scratch, MAX_FRAME_BYTES).await?;
        deliver(from, frame);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use glommio::LocalExecutorBuilder;

    use super::*;

    fn on_executor(test: impl FnOnce() + Send + 'static) {
        LocalExecutorBuilder::default().spawn(move || async move { test() }).unwrap().join().unwrap();
    }

    #[test]
    fn a_bound_address_is_not_shared_with_a_second_listener() {
        on_executor(|| {
            let first = bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = first.local_addr().unwrap();
            let err = bind(addr).map(drop).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        });
    }

    #[test]
    fn binds_beside_another_programs_time_wait_connections() {
        // A server that closes first leaves its side in TIME_WAIT; std's listener (like Go's)
        // sets SO_REUSEADDR only.
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        drop(server.accept().unwrap());
        assert_eq!(client.read(&mut [0; 1]).unwrap(), 0, "the server closed first");
        drop((client, server));
        on_executor(move || {
            bind(addr).expect("rebinding with a connection in TIME_WAIT");
        });
    }
}
