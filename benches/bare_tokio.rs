//! A reverse proxy with no logic and no pingora: one tokio current-thread
//! runtime, a task per client connection that reads a request head (no
//! body), writes it unchanged to a kept-alive upstream connection of its
//! own, reads the answer (`Content-Length` framing) and writes it back.
//! The floor of the gateway's I/O design (tokio's driver and scheduler, a
//! `recv`/`send` per direction) without pingora's listener and without any
//! of the gateway's checks, for `benches/cpu-per-request.sh`.
//!   cargo build --release --example bare-tokio
//!   target/release/examples/bare-tokio 127.0.0.1:9108 127.0.0.1:9001
//! Not a proxy to use: no timeouts, no chunked bodies, no request bodies.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare-tokio LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().map_err(std::io::Error::other)?;
    let upstream: SocketAddr = upstream.parse().map_err(std::io::Error::other)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(listen).await?;
            loop {
                let (client, _) = listener.accept().await?;
                tokio::spawn(async move {
                    let _ = serve(client, upstream).await;
                });
            }
        })
}

/// The length of a complete head at the start of `buf`, and its
/// `Content-Length` (0 when absent); `None` while incomplete.
fn head(buf: &[u8], response: bool) -> std::io::Result<Option<(usize, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let parsed = if response {
        httparse::Response::new(&mut headers).parse(buf)
    } else {
        httparse::Request::new(&mut headers).parse(buf)
    };
    match parsed.map_err(std::io::Error::other)? {
        httparse::Status::Partial => Ok(None),
        httparse::Status::Complete(len) => {
            let body = headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .unwrap_or(0);
            Ok(Some((len, body)))
        }
    }
}

async fn serve(mut client: TcpStream, upstream: SocketAddr) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let mut up = TcpStream::connect(upstream).await?;
    up.set_nodelay(true)?;
    let mut req = BytesMut::with_capacity(4096);
    let mut resp = BytesMut::with_capacity(8192);
    loop {
        let len = loop {
            if let Some((len, _)) = head(&req, false)? {
                break len;
            }
            if client.read_buf(&mut req).await? == 0 {
                return Ok(());
            }
        };
        up.write_all(&req[..len]).await?;
        req.advance(len);
        let total = loop {
            if let Some((len, body)) = head(&resp, true)? {
                break len + body;
            }
            if up.read_buf(&mut resp).await? == 0 {
                return Ok(());
            }
        };
        while resp.len() < total {
            if up.read_buf(&mut resp).await? == 0 {
                return Ok(());
            }
        }
        client.write_all(&resp[..total]).await?;
        resp.advance(total);
    }
}
