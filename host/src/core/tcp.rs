//! Accepted sockets: keepalive, `TCP_USER_TIMEOUT` and `TCP_NODELAY` set on
//! accept, and the kernel's `TCP_INFO` read into the facts policies see.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};
use vigil_policy_runtime::TcpFacts;

use crate::core::config::TcpConfig;

/// A TCP listener that sets Vigil's socket options on every connection it
/// accepts.
pub struct VigilListener {
    inner: TcpListener,
    options: TcpConfig,
}

impl VigilListener {
    /// Wraps a bound listener.
    pub fn new(inner: TcpListener, options: TcpConfig) -> Self {
        VigilListener { inner, options }
    }

    fn configure(&self, stream: &TcpStream) -> io::Result<()> {
        let socket = SockRef::from(stream);
        if self.options.nodelay {
            socket.set_tcp_nodelay(true)?;
        }
        if self.options.keepalive_secs > 0 {
            let idle = Duration::from_secs(self.options.keepalive_secs);
            let keepalive = TcpKeepalive::new()
                .with_time(idle)
                .with_interval(idle / 3)
                .with_retries(3);
            socket.set_tcp_keepalive(&keepalive)?;
        }
        #[cfg(target_os = "linux")]
        if self.options.user_timeout_ms > 0 {
            socket
                .set_tcp_user_timeout(Some(Duration::from_millis(self.options.user_timeout_ms)))?;
        }
        Ok(())
    }
}

impl Listener for VigilListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, peer) = Listener::accept(&mut self.inner).await;
        if let Err(error) = self.configure(&stream) {
            tracing::debug!(%peer, %error, "cannot set socket options on accepted connection");
        }
        (stream, peer)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// What a session handler learns about its connection: the peer, and the
/// socket's descriptor for reading `TCP_INFO` while the session owns it.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The accepted socket; valid for as long as the connection is.
    pub fd: RawFd,
}

impl Connected<IncomingStream<'_, VigilListener>> for ConnInfo {
    fn connect_info(stream: IncomingStream<'_, VigilListener>) -> Self {
        ConnInfo {
            peer: *stream.remote_addr(),
            fd: stream.io().as_raw_fd(),
        }
    }
}

/// Reads `TCP_INFO`. The caller must own the connection `fd` belongs to (a
/// session task does, for its whole life), so the descriptor cannot have
/// been closed and reused.
#[cfg(target_os = "linux")]
pub fn tcp_info(fd: RawFd) -> Option<TcpFacts> {
    // SAFETY: the caller owns the connection, so `fd` is open for the
    // duration of this borrow.
    #[allow(unsafe_code)]
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut info: libc::tcp_info = unsafe_zeroed_tcp_info();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a properly sized, writable `tcp_info` and `len` says
    // its size; the kernel writes at most `len` bytes and updates `len`.
    #[allow(unsafe_code)]
    let result = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if result != 0 {
        return None;
    }
    Some(TcpFacts {
        rtt_us: info.tcpi_rtt,
        rttvar_us: info.tcpi_rttvar,
        total_retransmits: info.tcpi_total_retrans,
        unacked: info.tcpi_unacked,
        last_data_recv_ms: info.tcpi_last_data_recv,
    })
}

#[cfg(target_os = "linux")]
fn unsafe_zeroed_tcp_info() -> libc::tcp_info {
    // SAFETY: `tcp_info` is a plain C struct of integers, for which all-zero
    // bytes are a valid value.
    #[allow(unsafe_code)]
    unsafe {
        std::mem::zeroed()
    }
}

/// `TCP_INFO` is Linux-only; elsewhere policies get no TCP facts.
#[cfg(not(target_os = "linux"))]
pub fn tcp_info(_fd: RawFd) -> Option<TcpFacts> {
    None
}
