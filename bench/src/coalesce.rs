//! A connection's outgoing bytes held back for one turn of the scheduler, so that the requests
//! of every client sharing the connection leave in one write.
//!
//! h2 flushes its connection each time the connection task runs, and that task is woken by
//! each request a client sends: without help, 64 clients on 8 connections sent one TCP
//! segment per request (one `writev` of ~280 bytes per put, counted with strace), and each
//! segment costs the sender the whole loopback delivery and the server a receive. Holding a
//! flush back until the other ready tasks have run (they queue their requests meanwhile) is
//! the batching grpc-go's writer does; it delays a lone request by one pass of the scheduler.
//!
//! Invariant: bytes accepted by `poll_write` are written, in order, by the next flush that
//! returns Ready (or shutdown); a flush with bytes held yields once before writing them.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, BufWriter, ReadBuf};

/// Bytes held before a write passes them on without waiting for a flush.
const CAPACITY: usize = 256 << 10;

/// An I/O stream whose writes are held until a flush that follows a yield.
pub struct Coalescing<T> {
    inner: BufWriter<T>,
    /// A flush already yielded once for what is held.
    yielded: bool,
}

impl<T: AsyncWrite> Coalescing<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Coalescing<T> {
        Coalescing { inner: BufWriter::with_capacity(CAPACITY, inner), yielded: false }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Coalescing<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Coalescing<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.inner.buffer().is_empty() && !self.yielded {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(Pin::new(&mut self.inner).poll_flush(cx))?;
        self.yielded = false;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn writes_wait_for_the_flush_after_a_yield_and_leave_together_in_order() {
        let (near, mut far) = tokio::io::duplex(1 << 20);
        let mut stream = Coalescing::new(near);
        stream.write_all(b"first ").await.unwrap();
        let first_flush = poll_fn(|cx| Poll::Ready(Pin::new(&mut stream).poll_flush(cx))).await;
        assert!(first_flush.is_pending(), "the first flush yields");
        stream.write_all(b"second").await.unwrap();
        let mut nothing = [0u8; 1];
        let early = tokio::time::timeout(std::time::Duration::from_millis(20), far.read(&mut nothing)).await;
        assert!(early.is_err(), "nothing is written before the flush");
        stream.flush().await.unwrap();
        let mut received = [0u8; 12];
        far.read_exact(&mut received).await.unwrap();
        assert_eq!(&received, b"first second");
    }
}
