//! Per-source-IP limits on the public listener: connections held at once,
//! and new connections per second (a token bucket per address). Checked at
//! accept, before any byte is read; trusted proxies are exempt (their
//! clients are many).

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use dashmap::DashMap;

/// Token buckets kept at most; beyond it idle ones are forgotten.
const MAX_TRACKED_ADDRESSES: usize = 100_000;

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address holds `per_ip_max_connections` already.
    TooManyConnections,
    /// The address opened connections faster than `per_ip_connections_per_sec`.
    TooFast,
}

impl Refusal {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::TooManyConnections => "per-ip-connections",
            Refusal::TooFast => "per-ip-rate",
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The limits and what each address uses of them.
#[derive(Debug)]
pub struct PerIpLimits {
    max_connections: usize,
    per_sec: u32,
    held: DashMap<IpAddr, usize>,
    buckets: Mutex<std::collections::HashMap<IpAddr, Bucket>>,
}

/// One connection's place in its address's count; given back on drop.
#[derive(Debug)]
pub struct IpSlot {
    limits: Arc<PerIpLimits>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let gone = self.limits.held.get_mut(&self.ip).map(|mut count| {
            *count = count.saturating_sub(1);
            *count == 0
        });
        if gone == Some(true) {
            self.limits.held.remove_if(&self.ip, |_, count| *count == 0);
        }
    }
}

impl PerIpLimits {
    /// `max_connections` held and `per_sec` new connections per address; 0
    /// turns either off.
    pub fn new(max_connections: usize, per_sec: u32) -> Arc<Self> {
        Arc::new(PerIpLimits {
            max_connections,
            per_sec,
            held: DashMap::new(),
            buckets: Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// Whether any limit is on.
    pub fn enabled(&self) -> bool {
        self.max_connections > 0 || self.per_sec > 0
    }

    /// Admits one more connection from `ip`, or says why not. The slot must
    /// live as long as the connection.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<Option<IpSlot>, Refusal> {
        if self.per_sec > 0 && !self.take_token(ip, now) {
            return Err(Refusal::TooFast);
        }
        if self.max_connections == 0 {
            return Ok(None);
        }
        let mut count = self.held.entry(ip).or_insert(0);
        if *count >= self.max_connections {
            return Err(Refusal::TooManyConnections);
        }
        *count += 1;
        drop(count);
        Ok(Some(IpSlot {
            limits: Arc::clone(self),
            ip,
        }))
    }

    fn take_token(&self, ip: IpAddr, now: Instant) -> bool {
        let rate = f64::from(self.per_sec);
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_TRACKED_ADDRESSES {
            // Full buckets are as good as forgotten ones.
            buckets.retain(|_, bucket| {
                now.saturating_duration_since(bucket.last).as_secs_f64() * rate < rate
            });
        }
        let bucket = buckets.entry(ip).or_insert(Bucket {
            tokens: rate,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)] // a failed expectation is the test failing
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_address_gets_its_connections_back_when_they_close() {
        let limits = PerIpLimits::new(2, 0);
        let ip: IpAddr = [192, 0, 2, 1].into();
        let now = Instant::now();
        let first = limits.admit(ip, now).expect("room");
        let _second = limits.admit(ip, now).expect("room");
        assert_eq!(
            limits.admit(ip, now).err(),
            Some(Refusal::TooManyConnections)
        );
        assert!(
            limits.admit([192, 0, 2, 2].into(), now).is_ok(),
            "others are not affected"
        );
        drop(first);
        assert!(limits.admit(ip, now).is_ok());
    }

    #[test]
    fn the_rate_refills_over_time() {
        let limits = PerIpLimits::new(0, 2);
        let ip: IpAddr = [192, 0, 2, 1].into();
        let now = Instant::now();
        assert!(limits.admit(ip, now).is_ok());
        assert!(limits.admit(ip, now).is_ok());
        assert_eq!(limits.admit(ip, now).err(), Some(Refusal::TooFast));
        assert!(limits.admit(ip, now + Duration::from_millis(600)).is_ok());
    }
}
