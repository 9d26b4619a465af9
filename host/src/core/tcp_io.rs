//! An accepted TCP connection, read the way libuv reads: a read that
//! returns fewer bytes than it asked for has drained the socket, so its
//! readiness is cleared there and then. Tokio's own `TcpStream` only clears
//! readiness when a read fails with `EAGAIN`, which costs every inbound
//! frame burst a second `recv` that finds nothing: for an idle session, one
//! system call in every pong it receives.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A non-blocking TCP connection registered with tokio's reactor.
pub struct TcpIo {
    socket: AsyncFd<std::net::TcpStream>,
}

impl TcpIo {
    /// Takes over an accepted connection from tokio's `TcpStream`.
    pub fn new(stream: tokio::net::TcpStream) -> io::Result<TcpIo> {
        // Still non-blocking, as `AsyncFd` needs it.
        let stream = stream.into_std()?;
        // SAFETY: the `AsyncFd` owns the `TcpStream`, whose descriptor stays
        // open and the same until the `AsyncFd` drops it.
        #[allow(unsafe_code)]
        let socket = unsafe { AsyncFd::register(stream) }.map_err(io::Error::from)?;
        Ok(TcpIo { socket })
    }
}

impl AsRawFd for TcpIo {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl AsyncRead for TcpIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut ready = ready!(self.socket.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let wanted = unfilled.len();
            match ready.try_io(|socket| socket.get_ref().read(unfilled)) {
                Ok(Ok(read)) => {
                    // Fewer bytes than asked: nothing is left. (A readiness
                    // event newer than this one is kept by tokio, so data
                    // arriving meanwhile still wakes the reader.)
                    if read > 0 && read < wanted {
                        ready.clear_ready();
                    }
                    buf.advance(read);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(error)) => return Poll::Ready(Err(error)),
                // `EAGAIN`: readiness cleared by `try_io`; wait again.
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for TcpIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut ready = ready!(self.socket.poll_write_ready(cx))?;
            match ready.try_io(|socket| socket.get_ref().write(buf)) {
                Ok(written) => return Poll::Ready(written),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the socket; nothing is buffered here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.socket.get_ref().shutdown(Shutdown::Write))
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)] // a failed expectation is the test failing
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (TcpIo, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback listener");
        let address = listener.local_addr().expect("its address");
        let client = tokio::net::TcpStream::connect(address);
        let (client, accepted) = tokio::join!(client, listener.accept());
        let accepted = accepted.expect("accepted").0;
        (
            TcpIo::new(accepted).expect("registered"),
            client.expect("connected"),
        )
    }

    #[tokio::test]
    async fn data_arriving_after_a_draining_read_still_wakes_the_reader() {
        let (mut server, mut client) = pair().await;
        let mut buf = [0u8; 64];
        client.write_all(b"first").await.expect("I/O on loopback");
        let read = server.read(&mut buf).await.expect("I/O on loopback");
        assert_eq!(&buf[..read], b"first");
        // The read above was short, so readiness was cleared without a
        // second read; the next bytes must still be seen.
        let later = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            client.write_all(b"second").await.expect("I/O on loopback");
            client
        });
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), server.read(&mut buf))
            .await
            .expect("the second write woke the reader")
            .expect("I/O on loopback");
        assert_eq!(&buf[..read], b"second");
        let mut client = later.await.expect("I/O on loopback");
        // A full buffer is not a drained socket: the rest is read too.
        let big = vec![7u8; 200];
        client.write_all(&big).await.expect("I/O on loopback");
        let mut got = Vec::new();
        while got.len() < big.len() {
            let read = server.read(&mut buf).await.expect("I/O on loopback");
            got.extend_from_slice(&buf[..read]);
        }
        assert_eq!(got, big);
        // And the end of the stream after a short read is seen.
        client.write_all(b"bye").await.expect("I/O on loopback");
        client.shutdown().await.expect("I/O on loopback");
        drop(client);
        let mut rest = Vec::new();
        server
            .read_to_end(&mut rest)
            .await
            .expect("I/O on loopback");
        assert_eq!(rest, b"bye");
    }

    #[tokio::test]
    async fn writes_and_shutdown_reach_the_peer() {
        let (mut server, mut client) = pair().await;
        server.write_all(b"hello").await.expect("I/O on loopback");
        server.shutdown().await.expect("I/O on loopback");
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.expect("I/O on loopback");
        assert_eq!(got, b"hello");
    }
}
