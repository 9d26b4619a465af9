//! The client side of the WebSocket wire, at frame level: the upgrade
//! request and frames parsed and written with tungstenite's own frame
//! types. A scripted client needs this much control — to read messages
//! but leave pings unanswered, or stop reading altogether — which a
//! message-level client (that answers pings by itself) does not give.

use std::io::Cursor;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

use crate::error::KitError;

/// Largest upgrade response read.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Largest frame a scripted client accepts from the host.
const MAX_FRAME: u64 = 16 << 20;

/// Performs the upgrade on `stream`; returns bytes read past the
/// response's head (the first frames, if the host sent some at once).
pub(crate) async fn upgrade(
    stream: &mut TcpStream,
    host: &str,
    path: &str,
    headers: &[(String, String)],
) -> Result<Vec<u8>, KitError> {
    let key = generate_key();
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(KitError::io("sending the upgrade request"))?;
    let mut response = Vec::new();
    let head_end = loop {
        if let Some(end) = find(&response, b"\r\n\r\n") {
            break end + 4;
        }
        if response.len() > MAX_RESPONSE_HEAD {
            return Err(KitError::Handshake(
                "the response head is too long".to_owned(),
            ));
        }
        let mut chunk = [0u8; 2048];
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(KitError::io("reading the upgrade response"))?;
        if read == 0 {
            return Err(KitError::Handshake(
                "the host closed the connection during the upgrade".to_owned(),
            ));
        }
        response.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&response[..head_end]).into_owned();
    let status_line = head.lines().next().unwrap_or_default();
    if !status_line.starts_with("HTTP/1.1 101") {
        let body = String::from_utf8_lossy(&response[head_end..]).into_owned();
        return Err(KitError::Handshake(format!("{status_line} {body}")));
    }
    let accept = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("sec-websocket-accept")
            .then(|| value.trim().to_owned())
    });
    if accept.as_deref() != Some(derive_accept_key(key.as_bytes()).as_str()) {
        return Err(KitError::Handshake(
            "the host answered with a wrong Sec-WebSocket-Accept".to_owned(),
        ));
    }
    Ok(response[head_end..].to_vec())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// A frame from the host, as the client cares about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Incoming {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close(u16, String),
}

/// Takes the next whole frame off the front of `buffer`, if there is one.
pub(crate) fn next_frame(buffer: &mut Vec<u8>) -> Result<Option<Incoming>, KitError> {
    let mut cursor = Cursor::new(buffer.as_slice());
    let Some((header, length)) = FrameHeader::parse(&mut cursor)
        .map_err(|error| KitError::Handshake(format!("a malformed frame: {error}")))?
    else {
        return Ok(None);
    };
    if length > MAX_FRAME {
        return Err(KitError::Handshake(format!(
            "a frame of {length} bytes is more than a test client takes"
        )));
    }
    let start = cursor.position() as usize;
    let end = start + length as usize;
    if buffer.len() < end {
        return Ok(None);
    }
    let payload: Vec<u8> = buffer[start..end].to_vec();
    buffer.drain(..end);
    let incoming = match header.opcode {
        OpCode::Data(Data::Text) | OpCode::Data(Data::Continue) => {
            Incoming::Text(String::from_utf8_lossy(&payload).into_owned())
        }
        OpCode::Data(Data::Binary) => Incoming::Binary(payload),
        OpCode::Control(Control::Ping) => Incoming::Ping(payload),
        OpCode::Control(Control::Pong) => Incoming::Pong,
        OpCode::Control(Control::Close) => {
            let code = payload
                .get(..2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .unwrap_or(1005);
            let reason = payload
                .get(2..)
                .map(|r| String::from_utf8_lossy(r).into_owned())
                .unwrap_or_default();
            Incoming::Close(code, reason)
        }
        OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)) => {
            return Err(KitError::Handshake(
                "a frame with a reserved opcode".to_owned(),
            ))
        }
    };
    Ok(Some(incoming))
}

/// A masked client frame, ready to write.
pub(crate) fn client_frame(opcode: OpCode, payload: Vec<u8>, mask: [u8; 4]) -> Vec<u8> {
    let header = FrameHeader {
        opcode,
        mask: Some(mask),
        ..FrameHeader::default()
    };
    let mut bytes = Vec::with_capacity(payload.len() + 14);
    // Writing into a Vec cannot fail.
    let _ = Frame::from_payload(header, payload.into()).format(&mut bytes);
    bytes
}

/// A close frame's payload: the code, then the reason.
pub(crate) fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// Masks for one client's frames: a small xorshift, seeded per client.
/// (RFC 6455 wants masks a browser's script cannot predict; a test
/// client has no such script.)
pub(crate) struct Masks(u32);

impl Masks {
    pub(crate) fn new(seed: u32) -> Self {
        Masks(seed | 1)
    }

    pub(crate) fn next(&mut self) -> [u8; 4] {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x.to_be_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_taken_whole_and_only_whole() {
        let mut wire = Vec::new();
        let _ = Frame::message(b"hello".to_vec(), OpCode::Data(Data::Text), true).format(&mut wire);
        let _ = Frame::ping(b"7".to_vec()).format(&mut wire);
        let mut partial = wire[..4].to_vec();
        assert!(matches!(next_frame(&mut partial), Ok(None)));
        assert_eq!(partial.len(), 4, "a partial frame stays in the buffer");
        assert_eq!(
            next_frame(&mut wire).ok().flatten(),
            Some(Incoming::Text("hello".to_owned()))
        );
        assert_eq!(
            next_frame(&mut wire).ok().flatten(),
            Some(Incoming::Ping(b"7".to_vec()))
        );
        assert!(wire.is_empty());
    }
}
