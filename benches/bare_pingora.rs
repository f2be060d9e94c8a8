//! A pingora proxy with no gateway logic at all, built with the gateway's own
//! settings (pingora 0.9, rustls, one thread, no-steal runtime, the same
//! allocator: the system's, mimalloc with `--features mimalloc`):
//! the floor the gateway is compared against in `benches/README.md`.
//!
//! `cargo run --release --example bare-pingora -- LISTEN UPSTREAM`, e.g.
//! `127.0.0.1:9107 127.0.0.1:9001`. Plain HTTP upstream only; every request
//! is forwarded as it came.

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use std::net::SocketAddr;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare(SocketAddr);

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}

    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.0, false, String::new())))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().expect("usage: bare-pingora LISTEN UPSTREAM");
    let upstream: SocketAddr = args
        .next()
        .and_then(|a| a.parse().ok())
        .expect("usage: bare-pingora LISTEN UPSTREAM (UPSTREAM as IP:port)");
    let conf = ServerConf {
        threads: 1,
        work_stealing: std::env::var_os("WORK_STEALING").is_some(),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Bare(upstream));
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever()
}
