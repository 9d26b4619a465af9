//! The public listener's accept loop: every connection is bounded before it
//! can become a session. Per source IP, connections held and opened per
//! second are limited (429); connections still in their handshake are
//! capped (503); the whole handshake — TLS, the request's headers, the
//! upgrade — must finish within the handshake timeout, or the connection is
//! closed. Every refusal is counted in `vigil_connections_refused_total`.
//! Each connection is metered against the inbound budget, and the request
//! learns its real client (through a trusted proxy) before any route runs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ConnectInfo;
use axum::http::{header, Request};
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::core::config::{ServerConfig, TcpConfig};
use crate::core::inbound::{InboundMeter, MeteredStream};
use crate::core::tcp::{configure_socket, ConnInfo};
use crate::core::tcp_io::TcpIo;
use crate::core::SessionHost;
use crate::http::limits::PerIpLimits;
use crate::http::peer::TrustedProxies;
use crate::http::tls::TlsReloader;

/// What every connection task shares.
struct Shared {
    host: SessionHost,
    app: Router,
    server: ServerConfig,
    tcp: TcpConfig,
    proxies: TrustedProxies,
    per_ip: Arc<PerIpLimits>,
    handshakes: Arc<Semaphore>,
    tls: Option<Arc<TlsReloader>>,
    open: AtomicUsize,
    closed: Notify,
}

/// Serves `app` on `listener` until `stop` turns true, then lets open HTTP
/// connections finish their requests and returns. Sessions are not
/// connections of this loop once upgraded: the host closes them.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    host: SessionHost,
    proxies: TrustedProxies,
    tls: Option<Arc<TlsReloader>>,
    tcp: TcpConfig,
    mut stop: watch::Receiver<bool>,
) {
    let server = host.config().server.clone();
    let shared = Arc::new(Shared {
        per_ip: PerIpLimits::new(
            server.per_ip_max_connections,
            server.per_ip_connections_per_sec,
        ),
        handshakes: Arc::new(Semaphore::new(server.max_handshakes)),
        host,
        app,
        server,
        tcp,
        proxies,
        tls,
        open: AtomicUsize::new(0),
        closed: Notify::new(),
    });
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, mostly: wait a moment rather than spin.
                tracing::warn!(%error, "cannot accept a connection");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        admit(&shared, stream, peer, stop.clone());
    }
    while shared.open.load(Ordering::SeqCst) > 0 {
        let closed = shared.closed.notified();
        if shared.open.load(Ordering::SeqCst) == 0 {
            break;
        }
        closed.await;
    }
}

/// Applies the limits that need no byte from the client, then starts the
/// connection's task.
fn admit(shared: &Arc<Shared>, stream: TcpStream, peer: SocketAddr, stop: watch::Receiver<bool>) {
    let metrics = shared.host.metrics();
    if let Err(error) = configure_socket(&stream, &shared.tcp) {
        tracing::debug!(%peer, %error, "cannot set socket options on accepted connection");
    }
    let slot = if shared.per_ip.enabled() && !shared.proxies.trusts(peer.ip()) {
        match shared.per_ip.admit(peer.ip(), Instant::now()) {
            Ok(slot) => slot,
            Err(refusal) => {
                metrics.refused(refusal.reason());
                refuse(
                    stream,
                    shared.tls.is_some(),
                    429,
                    "Too Many Requests",
                    refusal.reason(),
                );
                return;
            }
        }
    } else {
        None
    };
    let Ok(permit) = Arc::clone(&shared.handshakes).try_acquire_owned() else {
        metrics.refused("handshake-cap");
        refuse(
            stream,
            shared.tls.is_some(),
            503,
            "Service Unavailable",
            "too many connections in their handshake",
        );
        return;
    };
    metrics.handshakes_active.inc();
    shared.open.fetch_add(1, Ordering::SeqCst);
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let fd = stream.as_raw_fd();
        let handshake = Handshake::new(permit, &shared);
        let stream = match TcpIo::new(stream) {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(%peer, %error, "cannot register an accepted connection");
                drop(handshake);
                connection_ended(&shared);
                return;
            }
        };
        let meter = InboundMeter::new(shared.host.inbound_budget());
        let guard = slot.map(|slot| Box::new(slot) as Box<dyn Send + Sync>);
        let io = MeteredStream::new(stream, Arc::clone(&meter), guard);
        let deadline = tokio::time::Instant::now() + shared.server.handshake_timeout();
        match &shared.tls {
            Some(tls) => {
                // The accept future owns the socket: it is held until the
                // refusal is counted, so whoever sees the close sees the count.
                let accept = tls.acceptor().accept(io);
                tokio::pin!(accept);
                match tokio::time::timeout_at(deadline, &mut accept).await {
                    Ok(Ok(io)) => {
                        serve_http(&shared, io, peer, fd, meter, deadline, handshake, stop).await
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(%peer, %error, "TLS handshake failed");
                        shared.host.metrics().refused("tls");
                    }
                    Err(_) => shared.host.metrics().refused("handshake-timeout"),
                }
            }
            None => {
                // Plain TCP: the socket carries the frames themselves, so
                // the tick may write a session's pings between them.
                meter.gate.open(fd);
                serve_http(&shared, io, peer, fd, meter, deadline, handshake, stop).await
            }
        }
        connection_ended(&shared);
    });
}

/// A connection's task ends: the last one out tells a waiting shutdown.
fn connection_ended(shared: &Shared) {
    if shared.open.fetch_sub(1, Ordering::SeqCst) == 1 {
        shared.closed.notify_waiters();
    }
}

/// A connection's place among those in their handshake; given back once
/// the handshake is over, whichever way.
struct Handshake {
    permit: Option<OwnedSemaphorePermit>,
    shared: Arc<Shared>,
}

impl Handshake {
    fn new(permit: OwnedSemaphorePermit, shared: &Arc<Shared>) -> Self {
        Handshake {
            permit: Some(permit),
            shared: Arc::clone(shared),
        }
    }

    fn over(&mut self) {
        if self.permit.take().is_some() {
            self.shared.host.metrics().handshakes_active.dec();
        }
    }

    fn in_progress(&self) -> bool {
        self.permit.is_some()
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        self.over();
    }
}

/// Serves HTTP/1.1 on one connection. The handshake is over when a request
/// that is not an upgrade arrives (keep-alive requests are then bounded by
/// the header timeout and an idle check) or when the upgrade completes.
#[allow(clippy::too_many_arguments)]
async fn serve_http<I>(
    shared: &Arc<Shared>,
    io: I,
    socket_peer: SocketAddr,
    fd: std::os::fd::RawFd,
    meter: Arc<InboundMeter>,
    deadline: tokio::time::Instant,
    mut handshake: Handshake,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settled = Arc::new(Notify::new());
    let requests = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let service = {
        let app = shared.app.clone();
        let proxies = shared.proxies.clone();
        let settled = Arc::clone(&settled);
        let requests = Arc::clone(&requests);
        let in_flight = Arc::clone(&in_flight);
        hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let (peer, proxied) = proxies.client(socket_peer, request.headers());
            request.extensions_mut().insert(ConnectInfo(ConnInfo {
                peer,
                fd,
                proxied,
                meter: Some(Arc::clone(&meter)),
            }));
            if !is_upgrade(&request) {
                settled.notify_one();
            }
            requests.fetch_add(1, Ordering::Relaxed);
            in_flight.fetch_add(1, Ordering::Relaxed);
            let app = app.clone();
            let in_flight = Arc::clone(&in_flight);
            async move {
                let response = app.oneshot(request).await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
                Ok::<_, Infallible>(match response {
                    Ok(response) => response,
                    Err(never) => match never {},
                })
            }
        })
    };
    let timeout = shared.server.handshake_timeout();
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let mut idle_check = tokio::time::interval_at(deadline + timeout, timeout);
    let mut requests_seen = 0;
    let mut stopping = false;
    loop {
        tokio::select! {
            served = connection.as_mut() => {
                if let Err(error) = served {
                    // hyper's header timeout is the same bound, met first.
                    if handshake.in_progress() && error.is_timeout() {
                        shared.host.metrics().refused("handshake-timeout");
                    }
                    tracing::debug!(peer = %socket_peer, %error, "HTTP connection ended with an error");
                }
                break;
            }
            () = settled.notified(), if handshake.in_progress() => handshake.over(),
            () = tokio::time::sleep_until(deadline), if handshake.in_progress() => {
                shared.host.metrics().refused("handshake-timeout");
                tracing::debug!(peer = %socket_peer, "handshake timed out; connection closed");
                break;
            }
            _ = idle_check.tick(), if !handshake.in_progress() && !stopping => {
                // A keep-alive connection that sent nothing for a whole
                // period is closed, as a stalled handshake would be.
                let seen = requests.load(Ordering::Relaxed);
                if seen == requests_seen && in_flight.load(Ordering::Relaxed) == 0 {
                    connection.as_mut().graceful_shutdown();
                    stopping = true;
                }
                requests_seen = seen;
            }
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                connection.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    }
}

/// Whether a request asks for a WebSocket upgrade.
fn is_upgrade<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case("websocket"))
}

/// Answers a refused connection with `status` (plain HTTP only; on a TLS
/// listener the connection is just closed) and closes it.
fn refuse(stream: TcpStream, tls: bool, status: u16, text: &'static str, why: &'static str) {
    if tls {
        return;
    }
    tokio::spawn(async move {
        let mut stream = stream;
        let body = format!(r#"{{"error": "{why}"}}"#);
        let response = format!(
            "HTTP/1.1 {status} {text}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        })
        .await;
    });
}
