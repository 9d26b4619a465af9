//! The server under load, seen through the small interface every server in
//! the comparison offers: WebSocket sessions at `ws://HOST/ws`, and on a
//! control address `GET /sessions` (count and peer addresses) and
//! `POST /publish` (broadcast to every session). Vigil's own API has both;
//! the Node and Python peers in `bench/peers/` implement them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// Which dialect the control address speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Vigil: `/publish` takes `{"to": "all", "data": TEXT}`.
    Vigil,
    /// A benchmark peer: `/publish` takes the text as the body.
    Peer,
}

/// A server under load.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where sessions connect.
    pub ws: SocketAddr,
    /// Where `/sessions` and `/publish` are served.
    pub control: SocketAddr,
    /// The control dialect.
    pub kind: Kind,
    http: reqwest::Client,
}

/// Refuses anything but loopback: the load tool never leaves the machine.
pub fn ensure_loopback(address: SocketAddr) -> Result<()> {
    if !address.ip().is_loopback() {
        bail!("vigil-load talks to loopback addresses only, not {address}");
    }
    Ok(())
}

impl Target {
    /// A target; both addresses must be loopback.
    pub fn new(ws: SocketAddr, control: Option<SocketAddr>, kind: Kind) -> Result<Self> {
        let control = control.unwrap_or(ws);
        ensure_loopback(ws)?;
        ensure_loopback(control)?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(Target {
            ws,
            control,
            kind,
            http,
        })
    }

    /// The WebSocket URL sessions open.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.ws)
    }

    async fn get_json(&self, path: &str) -> Result<Value> {
        let url = format!("http://{}{path}", self.control);
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        response
            .json()
            .await
            .with_context(|| format!("GET {url}: not JSON"))
    }

    /// Sessions the server holds now.
    pub async fn count(&self) -> Result<u64> {
        self.get_json("/sessions?limit=0").await?["count"]
            .as_u64()
            .context("no count in the sessions answer")
    }

    /// The peer addresses of the sessions the server holds now.
    pub async fn peers(&self) -> Result<HashSet<String>> {
        let answer = self.get_json("/sessions?limit=1000000").await?;
        let sessions = answer["sessions"]
            .as_array()
            .context("no session list in the sessions answer")?;
        Ok(sessions
            .iter()
            .filter_map(|session| session["peer"].as_str().map(str::to_owned))
            .collect())
    }

    /// Broadcasts `text` to every session; the count the server reports.
    pub async fn publish(&self, text: String) -> Result<u64> {
        let url = format!("http://{}/publish", self.control);
        let request = match self.kind {
            Kind::Vigil => self
                .http
                .post(&url)
                .json(&json!({ "to": "all", "data": text })),
            Kind::Peer => self.http.post(&url).body(text),
        };
        let answer: Value = request
            .send()
            .await
            .with_context(|| format!("POST {url}"))?
            .json()
            .await
            .with_context(|| format!("POST {url}: not JSON"))?;
        answer["delivered"]
            .as_u64()
            .context("no delivered count in the publish answer")
    }

    /// Waits until the server holds `expected` sessions; false at `limit`.
    pub async fn wait_for_count(&self, expected: u64, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if matches!(self.count().await, Ok(count) if count == expected) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}
