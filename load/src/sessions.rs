//! Opening sessions from many source addresses, so ephemeral ports never
//! run out however many sessions a run holds.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Result;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;

/// Sessions per source address: far below the ~28 000 ephemeral ports of
/// one address, so sockets left in TIME_WAIT by earlier runs never exhaust it.
pub const PER_SOURCE: usize = 2_000;

/// Sessions one `vigil-load` process holds at most in the suite (files).
pub const PER_PROCESS: usize = 10_000;

/// Source address for connection `n` of a process whose first address is
/// 127.0.0.`first_block`: `PER_SOURCE` connections per address.
pub fn source_for(n: usize, first_block: u32) -> IpAddr {
    let block = (n / PER_SOURCE) as u32 + first_block;
    IpAddr::V4(Ipv4Addr::from(0x7f00_0000 + block))
}

/// A TCP connection from `source` to `host`.
pub async fn connect_from(host: SocketAddr, source: IpAddr) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    Ok(socket.connect(host).await?)
}

/// A WebSocket session to `url` from `source`.
pub async fn open(
    host: SocketAddr,
    url: &str,
    source: IpAddr,
) -> Result<WebSocketStream<TcpStream>> {
    let stream = connect_from(host, source).await?;
    let (websocket, _) = tokio_tungstenite::client_async(url, stream).await?;
    Ok(websocket)
}
