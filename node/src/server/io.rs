//! hyper's IO and executor traits on glommio: a TCP stream adapter and `spawn_local`.
//!
//! A client connection is HTTP/2 (gRPC) if it opens with the HTTP/2 preface, HTTP/1.1
//! (health, metrics, the JSON gateway) otherwise, as on etcd's client port. On HTTP/2, what
//! the client sends passes through [`AuthorityFix`] before hyper reads it, so requests
//! carrying a URL as `:authority` (etcdctl 3.4's `endpoint status`) are served, not reset;
//! once the fix passes the connection through unchanged, hyper reads straight from the
//! buffer the socket was read into.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use glommio::net::TcpStream;
use keel_api::authority::{AuthorityFix, PREFACE};

/// A glommio TCP stream as hyper IO.
pub struct Io {
    stream: TcpStream,
    /// Present on HTTP/2 connections until the fix passes everything through unchanged.
    fix: Option<AuthorityFix>,
    /// Repaired bytes not yet read by hyper, from `consumed` on.
    repaired: Vec<u8>,
    consumed: usize,
    /// Where reads from the socket land (allocated once per connection); on a connection
    /// that needs no repair, hyper reads `received[received_at..received_end]` from it.
    received: Box<[u8]>,
    received_at: usize,
    received_end: usize,
}

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

impl Io {
    /// Wraps an accepted client connection, reading its first bytes to tell HTTP/2 from
    /// HTTP/1.1; true means HTTP/2.
    pub async fn accept(mut stream: TcpStream) -> io::Result<(Io, bool)> {
        let mut start = Vec::new();
        let mut chunk = [0u8; 1024];
        while start.len() < PREFACE.len() && PREFACE.starts_with(&start) {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            start.extend_from_slice(&chunk[..n]);
        }
        let http2 = start.starts_with(PREFACE);
        let mut io = Io {
            stream,
            fix: http2.then(AuthorityFix::default),
            repaired: Vec::new(),
            consumed: 0,
            received: vec![0; READ_CHUNK].into_boxed_slice(),
            received_at: 0,
            received_end: 0,
        };
        io.take_in(&start)?;
        Ok((io, http2))
    }

    /// Passes bytes from the client on to hyper (repaired on HTTP/2).
    fn take_in(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.fix {
            Some(fix) => repair(fix, bytes, &mut self.repaired),
            None => {
                self.repaired.extend_from_slice(bytes);
                Ok(())
            }
        }
    }
}

/// Feeds the client's bytes through the fix; malformed HTTP/2 ends the connection.
fn repair(fix: &mut AuthorityFix, bytes: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    fix.push(bytes, out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl hyper::rt::Read for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            // Repaired bytes first, then bytes that need none, in the order they came.
            let available = if this.consumed < this.repaired.len() {
                &this.repaired[this.consumed..]
            } else {
                &this.received[this.received_at..this.received_end]
            };
            if !available.is_empty() {
                let n = buf.remaining().min(available.len());
                buf.put_slice(&available[..n]);
                if this.consumed < this.repaired.len() {
                    this.consumed += n;
                } else {
                    this.received_at += n;
                }
                return Poll::Ready(Ok(()));
            }
            this.repaired.clear();
            this.consumed = 0;
            if this.fix.as_ref().is_some_and(AuthorityFix::passes_through) {
                this.fix = None;
            }
            let n = ready!(Pin::new(&mut this.stream).poll_read(cx, &mut this.received))?;
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
            match &mut this.fix {
                // Read until a whole frame is repaired (or the client closes).
                Some(fix) => repair(fix, &this.received[..n], &mut this.repaired)?,
                None => (this.received_at, this.received_end) = (0, n),
            }
        }
    }
}

impl hyper::rt::Write for Io {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_close(cx)
    }
}

/// Runs hyper's connection tasks on the current glommio executor.
#[derive(Clone, Copy, Debug)]
pub struct LocalExecutor;

impl<F: Future + 'static> hyper::rt::Executor<F> for LocalExecutor {
    fn execute(&self, fut: F) {
        glommio::spawn_local(fut).detach();
    }
}
