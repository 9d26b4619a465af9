//! Accepted sockets: keepalive, `TCP_USER_TIMEOUT` and `TCP_NODELAY` set on
//! accept, and the kernel's `TCP_INFO` read into the facts policies see.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use std::sync::Arc;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;
use vigil_policy_runtime::TcpFacts;

use crate::core::config::TcpConfig;
use crate::core::inbound::InboundMeter;

/// Sets Vigil's socket options on an accepted connection: `TCP_NODELAY`,
/// keepalive, and (Linux) `TCP_USER_TIMEOUT`, as `[tcp]` says.
pub fn configure_socket(stream: &TcpStream, options: &TcpConfig) -> io::Result<()> {
    let socket = SockRef::from(stream);
    if options.nodelay {
        socket.set_tcp_nodelay(true)?;
    }
    if options.keepalive_secs > 0 {
        let idle = Duration::from_secs(options.keepalive_secs);
        let keepalive = TcpKeepalive::new()
            .with_time(idle)
            .with_interval(idle / 3)
            .with_retries(3);
        socket.set_tcp_keepalive(&keepalive)?;
    }
    #[cfg(target_os = "linux")]
    if options.user_timeout_ms > 0 {
        socket.set_tcp_user_timeout(Some(Duration::from_millis(options.user_timeout_ms)))?;
    }
    Ok(())
}

/// What a session handler learns about its connection: the peer, the
/// socket's descriptor for reading `TCP_INFO` while the session owns it,
/// whether it came through a trusted proxy, and its share of the inbound
/// budget.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address (the real client's, through a trusted proxy).
    pub peer: SocketAddr,
    /// The accepted socket; valid for as long as the connection is.
    pub fd: RawFd,
    /// Through a trusted proxy: the socket's TCP facts are the proxy's
    /// connection's, so they are not reported.
    pub proxied: bool,
    /// The connection's meter on the inbound budget, when it has one.
    pub meter: Option<Arc<InboundMeter>>,
}

/// Reads `TCP_INFO`. The caller must own the connection `fd` belongs to (a
/// session task does, for its whole life) or hold its write gate (the tick,
/// while it writes a ping: `core::write_gate`), so the descriptor cannot
/// have been closed and reused.
#[cfg(target_os = "linux")]
pub fn tcp_info(fd: RawFd) -> Option<TcpFacts> {
    // SAFETY: the caller owns the connection or holds its write gate, so
    // `fd` is open for the duration of this borrow.
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
