//! The request-body policy in the request phase: the size cap and the
//! server-only fields of the JSON body and the `payload` query document
//! (see `src/body.rs` for the rules themselves).

use bytes::Bytes;
use pingora::proxy::Session;

use super::{Gateway, RequestCtx};
use crate::body::{self, Location, ServerOnlyMode};
use crate::exchange::Forward;
use crate::refusal::Refusal;

impl Gateway {
    /// The body policy: the size cap (from `Content-Length` here; chunked
    /// bodies are counted as they stream, in `request_body_filter`), then,
    /// for operations with server-only fields, the `payload` query document
    /// and the JSON body (read ahead, at most `max_inspected_body` bytes,
    /// then forwarded from pingora's read-ahead buffer, or rewritten when
    /// fields are stripped).
    pub(super) async fn check_body(
        &self,
        session: &mut Session,
        forward: &mut Forward,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<(), Refusal> {
        let req = session.req_header();
        let content_length = req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let method = req.method.clone();
        let empty = session.is_body_empty();
        if !self.check_body_head(forward, method.as_str(), content_length, empty, ctx)? {
            return Ok(());
        }
        let max_inspected = self.exchange.routing.load().body.max_inspected;
        session.enable_retry_buffering();
        let mut buf = bytes::BytesMut::new();
        loop {
            match session.read_request_body().await {
                Ok(Some(chunk)) => {
                    if buf.len() + chunk.len() > max_inspected {
                        return Err(Refusal::PayloadTooLarge);
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(_) => return Err(Refusal::BadRequest("could not read the request body")),
            }
        }
        ctx.bytes_in = buf.len() as u64;
        ctx.read_ahead = true;
        self.inspect_body(&buf, method.as_str(), &forward.template, ctx)
    }

    /// The server-only fields of a JSON body read whole (pingora's path
    /// reads it ahead; the fast path has it before deciding): refused, or
    /// stripped into `ctx.replacement_body`, per `[policy]`.
    pub(super) fn inspect_body(
        &self,
        buf: &[u8],
        method: &str,
        template: &str,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<(), Refusal> {
        let routing = self.exchange.routing.load();
        let bp = &routing.body;
        if buf.len() as u64 > bp.max_body_bytes || buf.len() > bp.max_inspected {
            return Err(Refusal::PayloadTooLarge);
        }
        if buf.is_empty() {
            return Ok(());
        }
        let Some(rules) = bp.fields.rules(method, template) else {
            return Ok(());
        };
        let mut doc: serde_json::Value = serde_json::from_slice(buf)
            .map_err(|_| Refusal::BadRequest("the request body is not valid JSON"))?;
        match bp.server_only {
            ServerOnlyMode::Refuse => match body::find(&doc, rules, Location::Body) {
                Some(field) => Err(Refusal::ServerOnlyField(field)),
                None => Ok(()),
            },
            ServerOnlyMode::Strip => {
                if body::strip(&mut doc, rules, Location::Body) > 0 {
                    let out = serde_json::to_vec(&doc).map_err(|_| Refusal::Internal)?;
                    ctx.replacement_body = Some(Bytes::from(out));
                }
                Ok(())
            }
            ServerOnlyMode::Pass => Ok(()),
        }
    }

    /// The part of the body policy decided from the head: the size cap by
    /// `Content-Length`, the `payload` query document. `Ok(true)` when the
    /// body itself must be read and checked.
    pub(super) fn check_body_head(
        &self,
        forward: &mut Forward,
        method: &str,
        content_length: Option<u64>,
        body_empty: bool,
        ctx: &mut RequestCtx,
    ) -> std::result::Result<bool, Refusal> {
        let routing = self.exchange.routing.load();
        let bp = &routing.body;
        ctx.body_limit = bp.max_body_bytes;
        if content_length.is_some_and(|n| n > bp.max_body_bytes) {
            return Err(Refusal::PayloadTooLarge);
        }
        // Server-only fields are what server-side calls may set: a service
        // account's body goes through as sent (only the size cap applies).
        if bp.server_only == ServerOnlyMode::Pass || forward.service().is_some() {
            return Ok(false);
        }
        let Some(rules) = bp.fields.rules(method, &forward.template) else {
            return Ok(false);
        };
        if rules.iter().any(|r| r.location == Location::Payload) {
            self.check_payload(forward, rules, bp.server_only)?;
        }
        Ok(rules.iter().any(|r| r.location == Location::Body) && !body_empty)
    }

    /// Server-only fields in the `payload` query document (GET queries).
    fn check_payload(
        &self,
        forward: &mut Forward,
        rules: &[body::FieldRule],
        mode: ServerOnlyMode,
    ) -> std::result::Result<(), Refusal> {
        let Some((path, q)) = forward.path_and_query.split_once('?') else {
            return Ok(());
        };
        let pairs = crate::query::parse(q).map_err(Refusal::BadRequest)?;
        let Some(payload) = pairs.iter().find(|p| crate::query::is_key(p, "payload")) else {
            return Ok(());
        };
        let mut doc: serde_json::Value = serde_json::from_str(&payload.value)
            .map_err(|_| Refusal::BadRequest("the payload parameter is not valid JSON"))?;
        match mode {
            ServerOnlyMode::Refuse => match body::find(&doc, rules, Location::Payload) {
                Some(field) => Err(Refusal::ServerOnlyField(field)),
                None => Ok(()),
            },
            ServerOnlyMode::Strip => {
                if body::strip(&mut doc, rules, Location::Payload) > 0 {
                    let json = doc.to_string();
                    let rebuilt = crate::query::rebuild(
                        &pairs,
                        |p| crate::query::is_key(p, "payload"),
                        &[("payload", json.as_str())],
                    );
                    forward.path_and_query = format!("{path}?{rebuilt}");
                }
                Ok(())
            }
            ServerOnlyMode::Pass => Ok(()),
        }
    }
}
