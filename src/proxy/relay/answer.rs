//! Stream's answer to a relayed `/connect` upgrade: dialling Stream,
//! sending the rewritten upgrade head, reading the answer's head, and (for an
//! answer other than 101) its body.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::Stream;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::proxy::Gateway;

/// Largest upgrade answer head read from Stream.
const MAX_HEAD: usize = 16 * 1024;
/// Largest body of a non-101 answer relayed to the client.
const MAX_ANSWER_BODY: usize = 64 * 1024;

/// Stream's answer to the upgrade: its head, the connection, and whatever
/// came after the head in the same reads.
pub(super) struct Answer {
    pub resp: ResponseHeader,
    pub upstream: Stream,
    pub rest: BytesMut,
    content_length: Option<usize>,
    chunked: bool,
}

impl Gateway {
    /// Connects to Stream, sends the rewritten upgrade, reads the answer's
    /// head.
    pub(super) async fn dial(&self, head: &RequestHeader) -> Result<Answer> {
        let s = &self.upstream.settings;
        let peer = self.upstream.peer(true);
        let mut upstream = self.connector.new_stream(&peer).await?;
        crate::metrics::get().upstream_connections_new.inc();
        let wire = request_wire(head);
        let write = async {
            upstream.write_all(&wire).await?;
            upstream.flush().await
        };
        match tokio::time::timeout(s.write_timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Error::e_because(WriteError, "sending the upgrade to Stream", e),
            Err(_) => return Error::e_explain(WriteTimedout, "sending the upgrade to Stream"),
        }
        let deadline = tokio::time::Instant::now() + s.read_timeout;
        let mut buf = BytesMut::with_capacity(1024);
        loop {
            match tokio::time::timeout_at(deadline, upstream.read_buf(&mut buf)).await {
                Ok(Ok(0)) => {
                    return Error::e_explain(ConnectionClosed, "Stream closed before answering")
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Error::e_because(ReadError, "reading Stream's answer", e),
                Err(_) => return Error::e_explain(ReadTimedout, "reading Stream's answer"),
            }
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut headers);
            match parsed.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let code = parsed.code.unwrap_or(502);
                    let mut resp = ResponseHeader::build_no_case(code, Some(parsed.headers.len()))?;
                    let (mut content_length, mut chunked) = (None, false);
                    for h in parsed.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            content_length = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok());
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = h.value.eq_ignore_ascii_case(b"chunked");
                        }
                        resp.append_header(h.name.to_string(), h.value)?;
                    }
                    let rest = buf.split_off(len);
                    return Ok(Answer {
                        resp,
                        upstream,
                        rest,
                        content_length,
                        chunked,
                    });
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
                Ok(httparse::Status::Partial) => {
                    return Error::e_explain(InvalidHTTPHeader, "Stream's answer head is too large")
                }
                Err(_) => {
                    return Error::e_explain(InvalidHTTPHeader, "Stream's answer is not HTTP")
                }
            }
        }
    }
}

/// The upstream request head on the wire.
fn request_wire(head: &RequestHeader) -> Vec<u8> {
    let path = head.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in head.headers.iter() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The body of a non-101 answer: by its length, its chunks, or to the end
/// of the connection; at most [`MAX_ANSWER_BODY`].
pub(super) async fn read_body(answer: &mut Answer, timeout: Duration) -> Result<Bytes> {
    let deadline = tokio::time::Instant::now() + timeout;
    let buf = &mut answer.rest;
    loop {
        let done = match (answer.content_length, answer.chunked) {
            (Some(len), _) => buf.len() >= len,
            (None, true) => decode_chunked(buf).is_some(),
            (None, false) => false,
        };
        if done {
            break;
        }
        if buf.len() > MAX_ANSWER_BODY {
            return Error::e_explain(InvalidHTTPHeader, "Stream's answer body is too large");
        }
        match tokio::time::timeout_at(deadline, answer.upstream.read_buf(buf)).await {
            Ok(Ok(0)) if answer.content_length.is_none() && !answer.chunked => break,
            Ok(Ok(0)) => {
                return Error::e_explain(ConnectionClosed, "Stream's answer was cut short")
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Error::e_because(ReadError, "reading Stream's answer", e),
            Err(_) => return Error::e_explain(ReadTimedout, "reading Stream's answer"),
        }
    }
    Ok(match (answer.content_length, answer.chunked) {
        (Some(len), _) => buf.split_to(len).freeze(),
        (None, true) => Bytes::from(decode_chunked(buf).unwrap_or_default()),
        (None, false) => buf.split().freeze(),
    })
}

/// A complete chunked body, decoded; `None` until the last chunk arrived.
fn decode_chunked(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            // Trailers (if any) end with an empty line.
            return raw.windows(2).any(|w| w == b"\r\n").then_some(out);
        }
        if raw.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::decode_chunked;

    #[test]
    fn chunked_bodies_decode_only_when_complete() {
        assert_eq!(
            decode_chunked(b"4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n").as_deref(),
            Some(&b"Wikipedia"[..])
        );
        assert_eq!(decode_chunked(b"4\r\nWiki\r\n5\r\npedia\r\n"), None);
        assert_eq!(decode_chunked(b"4\r\nWi"), None);
        assert_eq!(decode_chunked(b"zz\r\n"), None);
    }
}
