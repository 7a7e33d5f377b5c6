//! hyper's IO and executor traits on glommio: a TCP stream adapter and `spawn_local`.
//!
//! What the client sends passes through [`AuthorityFix`] before hyper reads it, so requests
//! carrying a URL as `:authority` (etcdctl 3.4's `endpoint status`) are served, not reset.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use keel_api::authority::AuthorityFix;

/// A glommio TCP stream as hyper IO.
pub struct Io {
    stream: TcpStream,
    fix: AuthorityFix,
    /// Repaired bytes not yet read by hyper, from `consumed` on.
    repaired: Vec<u8>,
    consumed: usize,
}

impl Io {
    /// Wraps an accepted client connection.
    pub fn new(stream: TcpStream) -> Io {
        Io { stream, fix: AuthorityFix::default(), repaired: Vec::new(), consumed: 0 }
    }
}

impl hyper::rt::Read for Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // Read until a whole frame is repaired (or the client closes).
        while this.consumed == this.repaired.len() {
            this.repaired.clear();
            this.consumed = 0;
            let mut chunk = [0u8; 16 * 1024];
            let n = ready!(Pin::new(&mut this.stream).poll_read(cx, &mut chunk))?;
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
            this.fix
                .push(&chunk[..n], &mut this.repaired)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
        let available = &this.repaired[this.consumed..];
        let n = buf.remaining().min(available.len());
        buf.put_slice(&available[..n]);
        this.consumed += n;
        Poll::Ready(Ok(()))
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
