//! Who a request really comes from: the socket's peer, or — when that peer
//! is a trusted proxy — the client `X-Forwarded-For` names.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Trust these addresses and ranges.
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies(nets)
    }

    /// Whether `ip` is one of them.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address, and whether it came through a proxy. The
    /// header is read right to left, skipping trusted proxies: the first
    /// address a trusted proxy did not add itself is the client. A header
    /// from an untrusted peer is ignored (anyone can write one).
    pub fn client(&self, socket_peer: SocketAddr, headers: &HeaderMap) -> (SocketAddr, bool) {
        if !self.trusts(socket_peer.ip()) {
            return (socket_peer, false);
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in forwarded.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                // Garbage from a trusted proxy's upstream: stop believing.
                break;
            };
            if !self.trusts(ip) {
                return (SocketAddr::new(ip, 0), true);
            }
        }
        (socket_peer, false)
    }
}

/// One `X-Forwarded-For` entry: an address, `[v6]:port` or `v4:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    hop.parse::<SocketAddr>().ok().map(|addr| addr.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = value.parse() {
            headers.insert("x-forwarded-for", value);
        }
        headers
    }

    fn proxies() -> TrustedProxies {
        let nets = ["10.0.0.0/8", "127.0.0.1/32"]
            .iter()
            .filter_map(|net| net.parse().ok())
            .collect();
        TrustedProxies::new(nets)
    }

    #[test]
    fn the_header_is_believed_only_from_a_trusted_proxy() {
        let proxy: SocketAddr = ([127, 0, 0, 1], 4000).into();
        let stranger: SocketAddr = ([203, 0, 113, 9], 4000).into();
        let forwarded = headers("198.51.100.7, 10.1.2.3");
        assert_eq!(
            proxies().client(proxy, &forwarded),
            (([198, 51, 100, 7], 0).into(), true)
        );
        assert_eq!(proxies().client(stranger, &forwarded), (stranger, false));
        assert_eq!(proxies().client(proxy, &HeaderMap::new()), (proxy, false));
        assert_eq!(
            proxies().client(proxy, &headers("not an address")),
            (proxy, false)
        );
    }
}
