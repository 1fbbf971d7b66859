//! Bounds on the clients of `serve`'s endpoint, which listens on nodes shared with tenants' pods:
//! a scrape keeps its place (one of `SCRAPES_MAX`) until its body is sent or its connection
//! closes, so slow readers can never make the tracer hold more than `SCRAPES_MAX` bodies; and a
//! connection whose client stops reading is closed after `STALL_MAX`, which frees its place.

use std::{
    future::Future as _,
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::body::{Body, Bytes};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::OwnedSemaphorePermit,
    time::Sleep,
};

/// A write that cannot proceed this long (the client reads nothing) closes the connection.
pub const STALL_MAX: Duration = Duration::from_secs(10);
/// The body is handed to the connection in pieces this big, each when the previous one is sent.
const CHUNK: usize = 64 * 1024;

/// `body`, sent piece by piece while holding `permit`: the place is freed when the last piece
/// is sent or the connection goes.
pub fn held_body(body: String, permit: OwnedSemaphorePermit) -> Body {
    let body = Bytes::from(body);
    let pieces = futures_util::stream::unfold((body, 0, permit), |(body, at, permit)| async move {
        if at >= body.len() {
            return None;
        }
        let end = (at + CHUNK).min(body.len());
        let piece = body.slice(at..end);
        Some((Ok::<_, io::Error>(piece), (body, end, permit)))
    });
    Body::from_stream(pieces)
}

/// The listener `serve` hands axum: its connections close when their client stops reading.
pub struct Guarded(pub TcpListener);

impl axum::serve::Listener for Guarded {
    type Io = Stalls;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Stalls, SocketAddr) {
        let (s, a) = axum::serve::Listener::accept(&mut self.0).await;
        (
            Stalls {
                inner: s,
                stalled: None,
            },
            a,
        )
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A connection whose writes fail once one has waited `STALL_MAX` for the client to read.
pub struct Stalls {
    inner: TcpStream,
    /// Running while a write waits; reset by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl Stalls {
    /// Turns a pending write into an error once it has been pending `STALL_MAX`.
    fn waited<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(STALL_MAX)));
        if timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for Stalls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Waiting to read is a keep-alive connection between scrapes: not limited here.
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stalls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.waited(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.waited(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.waited(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.waited(cx, r)
    }
}
