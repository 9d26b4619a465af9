//! A bounded random-frame fuzzer against a real `vigil serve` process: for
//! about 30 s, many connections at once send a random mix of valid and
//! broken handshakes and frames — masked and unmasked, reserved opcodes,
//! bad lengths, invalid UTF-8, fragments out of order, oversized headers,
//! garbage — and end by closing, dropping, or stalling. Afterwards the host
//! still serves, holds no session of the fuzzer's, and its memory is back
//! within 10 % of where it stood after a warm-up round of the same traffic
//! (the allocator keeps what the first burst made it grow).
//!
//! The seed is printed; `VIGIL_FUZZ_SEED=N` replays a run,
//! `VIGIL_FUZZ_SECS=N` changes its length.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cli::start_server_with_env;
use crate::support::{http, sessions_become, upgrade_head, wait_until};

/// Connections at once.
const CONCURRENCY: usize = 48;

/// A small deterministic generator (xorshift64*), so a seed replays a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A client frame: FIN bit, opcode, payload, masked or not, with a length
/// field that may lie.
fn frame(rng: &mut Rng, fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | (opcode & 0x0F)];
    let mask_bit = if masked { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    if masked {
        let key = [
            rng.next() as u8,
            rng.next() as u8,
            rng.next() as u8,
            rng.next() as u8,
        ];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// One random frame, valid or broken.
fn random_frame(rng: &mut Rng) -> Vec<u8> {
    match rng.below(14) {
        0..=3 => {
            let text: String = (0..rng.below(200))
                .map(|_| (b'a' + rng.below(26) as u8) as char)
                .collect();
            frame(rng, true, 0x1, text.as_bytes(), true)
        }
        4 | 5 => {
            let len = rng.below(4_000) as usize;
            let payload = rng.bytes(len);
            frame(rng, true, 0x2, &payload, true)
        }
        6 => {
            let len = rng.below(200) as usize;
            let payload = rng.bytes(len);
            frame(rng, true, 0x9, &payload, true) // ping (too long past 125)
        }
        7 => {
            let payload = rng.bytes(8);
            frame(rng, true, 0xA, &payload, true) // unsolicited pong
        }
        8 => frame(rng, true, 0x1, &[0xC3, 0x28, 0xFF], true), // invalid UTF-8
        9 => {
            let opcode = [0x3, 0x4, 0x5, 0xB, 0xF][rng.below(5) as usize];
            let payload = rng.bytes(10);
            frame(rng, true, opcode, &payload, true) // reserved opcode
        }
        10 => frame(rng, true, 0x1, b"unmasked", false), // clients must mask
        11 => {
            // A fragment, then maybe a continuation out of order.
            let mut out = frame(rng, false, 0x1, b"part one ", true);
            if rng.below(2) == 0 {
                out.extend(frame(rng, true, 0x0, b"part two", true));
            } else {
                out.extend(frame(rng, true, 0x2, b"not a continuation", true));
            }
            out
        }
        12 => {
            // A header announcing far more than max_message_bytes.
            let mut out = vec![0x82, 0xFF];
            out.extend_from_slice(&(1u64 << 40).to_be_bytes());
            out.extend_from_slice(&[1, 2, 3, 4]);
            out
        }
        _ => {
            let len = rng.below(64) as usize;
            rng.bytes(len) // garbage
        }
    }
}

/// One fuzzing connection, bounded to about two seconds.
async fn one_connection(address: SocketAddr, rng: &mut Rng) {
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(address)).await
    else {
        return;
    };
    let head = match rng.below(10) {
        0 => "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: webs".to_owned(), // stalls mid-header
        1 => "GARBAGE\r\n\r\n".to_owned(),
        2 => upgrade_head("/ws").replace("13", "8") + "\r\n", // wrong version
        _ => upgrade_head("/ws") + "\r\n",
    };
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let mut response = vec![0u8; 1_024];
    let upgraded = matches!(
        tokio::time::timeout(Duration::from_millis(500), stream.read(&mut response)).await,
        Ok(Ok(n)) if response[..n].starts_with(b"HTTP/1.1 101")
    );
    if upgraded {
        for _ in 0..rng.below(20) {
            let bytes = random_frame(rng);
            let written =
                tokio::time::timeout(Duration::from_millis(300), stream.write_all(&bytes)).await;
            if !matches!(written, Ok(Ok(()))) {
                break;
            }
            if rng.below(4) == 0 {
                let mut sink = vec![0u8; 8_192];
                let _ =
                    tokio::time::timeout(Duration::from_millis(20), stream.read(&mut sink)).await;
            }
        }
    }
    match rng.below(3) {
        0 => {
            let close = frame(rng, true, 0x8, &1000u16.to_be_bytes(), true);
            let _ = stream.write_all(&close).await;
            let mut sink = vec![0u8; 1_024];
            let _ = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut sink)).await;
        }
        1 => tokio::time::sleep(Duration::from_millis(rng.below(1_000))).await, // stall, then drop
        _ => {}                                                                 // drop at once
    }
}

/// Runs the fuzzer for `duration`; how many connections it made.
async fn fuzz(address: SocketAddr, seed: u64, duration: Duration) -> u64 {
    let deadline = Instant::now() + duration;
    let workers: Vec<_> = (0..CONCURRENCY as u64)
        .map(|worker| {
            tokio::spawn(async move {
                let mut rng = Rng(seed ^ (worker + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
                let mut connections = 0;
                while Instant::now() < deadline {
                    one_connection(address, &mut rng).await;
                    connections += 1;
                }
                connections
            })
        })
        .collect();
    let mut total = 0;
    for worker in workers {
        total += worker.await.unwrap_or(0);
    }
    total
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|value| value.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_frames_from_many_connections_leave_the_host_serving_and_its_memory_where_it_was() {
    let seed = std::env::var("VIGIL_FUZZ_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(vigil::policy::clock::unix_ms_now);
    let seconds: u64 = std::env::var("VIGIL_FUZZ_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .unwrap_or(30);
    eprintln!("fuzzing with VIGIL_FUZZ_SEED={seed} for {seconds} s");
    // The allocator hands freed memory back to the system promptly, so RSS
    // tells what the host still holds.
    let server = start_server_with_env(
        &[
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/all/fuzz.toml"),
        ],
        &[
            ("MALLOC_ARENA_MAX", "2"),
            ("MALLOC_MMAP_THRESHOLD_", "131072"),
            ("MALLOC_TRIM_THRESHOLD_", "131072"),
        ],
    );
    let address: SocketAddr = match server.address.parse() {
        Ok(address) => address,
        Err(error) => panic!("bad address {}: {error}", server.address),
    };
    let pid = server.child.id();

    // Warm-up: the same traffic, briefly, so the baseline includes what
    // the first burst makes the allocator and tokio keep.
    fuzz(
        address,
        seed.wrapping_add(1),
        Duration::from_secs(seconds / 6 + 1),
    )
    .await;
    assert!(
        sessions_become(address, 0, Duration::from_secs(15)).await,
        "warm-up sessions were left behind"
    );
    let baseline = rss_kib(pid);

    let connections = fuzz(address, seed, Duration::from_secs(seconds)).await;
    eprintln!("{connections} fuzzing connections");
    assert!(
        connections > 100,
        "the fuzzer made only {connections} connections"
    );

    // Every fuzzing session ends: by its own close, a protocol error, EOF,
    // or the handshake timeout.
    assert!(
        sessions_become(address, 0, Duration::from_secs(15)).await,
        "fuzzing sessions were left behind: {}",
        http(address, "GET", "/sessions?limit=5", None, None)
            .await
            .text
    );
    let health = http(address, "GET", "/healthz", None, None).await;
    assert_eq!(health.status, 200, "{}", health.text);
    assert_eq!(health.json["status"], "ok", "{}", health.text);

    // A normal client still connects and hears a publish.
    let (mut socket, _) = match tokio_tungstenite::connect_async(format!("ws://{address}/ws")).await
    {
        Ok(connected) => connected,
        Err(error) => panic!("a normal client cannot connect after the fuzzing: {error}"),
    };
    assert!(sessions_become(address, 1, Duration::from_secs(5)).await);
    let published = http(
        address,
        "POST",
        "/publish",
        Some(r#"{"to": "all", "data": "after the storm"}"#),
        None,
    )
    .await;
    assert_eq!(published.json["delivered"], 1, "{}", published.text);
    use futures_util::StreamExt;
    let heard = tokio::time::timeout(Duration::from_secs(5), socket.next()).await;
    assert!(
        matches!(heard, Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(ref text)))) if text.as_str() == "after the storm"),
        "{heard:?}"
    );
    drop(socket);

    let settled = wait_until(Duration::from_secs(10), || async {
        rss_kib(pid) <= baseline + baseline / 10
    })
    .await;
    let after = rss_kib(pid);
    eprintln!("RSS: {baseline} KiB after the warm-up, {after} KiB after {seconds} s of fuzzing");
    assert!(
        settled.is_some(),
        "memory grew from {baseline} KiB to {after} KiB (more than 10 %)"
    );
}
