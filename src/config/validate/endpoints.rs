//! `[server]` and `[upstream]`: addresses, timeouts, client limits, TLS.

use super::*;

fn addr(key: &str, value: &str, p: &mut Problems) -> Option<SocketAddr> {
    match value.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.add(format!("{key}: \"{value}\" is not an IP:port address"));
            None
        }
    }
}

pub(super) fn server(
    s: &file::ServerSection,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<ServerSettings> {
    let listen = addr("server.listen", &s.listen, p);
    let admin_listen = s
        .admin_listen
        .as_ref()
        .map(|a| addr("server.admin_listen", a, p));
    let threads = s.threads.unwrap_or(file::DEFAULT_THREADS);
    if threads == 0 {
        p.add("server.threads: must be at least 1");
    }
    if listen.is_some() && admin_listen == Some(listen) {
        p.add("server.admin_listen: must differ from server.listen");
    }
    let d = crate::config::ClientLimits::default();
    let client = crate::config::ClientLimits {
        max_uri_bytes: s.max_uri_bytes.unwrap_or(d.max_uri_bytes),
        max_header_bytes: s.max_header_bytes.unwrap_or(d.max_header_bytes),
        max_headers: s.max_headers.unwrap_or(d.max_headers),
        body_timeout: s.client_body_timeout.unwrap_or(d.body_timeout),
        header_timeout: s.client_header_timeout.unwrap_or(d.header_timeout),
    };
    for (key, v) in [
        ("max_uri_bytes", client.max_uri_bytes),
        ("max_header_bytes", client.max_header_bytes),
        ("max_headers", client.max_headers),
    ] {
        if v == 0 {
            p.add(format!("server.{key}: must be at least 1"));
        }
    }
    if client.body_timeout.is_zero() {
        p.add("server.client_body_timeout: must be more than 0s");
    }
    if client.header_timeout.is_zero() {
        p.add("server.client_header_timeout: must be more than 0s");
    }
    let mut trusted = Vec::new();
    for entry in &s.trusted_proxies {
        match crate::client_ip::Cidr::parse(entry) {
            Ok(c) => trusted.push(c),
            Err(e) => p.add(format!("server.trusted_proxies: {e}")),
        }
    }
    let tls = match &s.tls {
        Some(t) => Some(certs::listener(t, s.h2c, base_dir, p)?),
        None => None,
    };
    Some(ServerSettings {
        listen: listen?,
        admin_listen: match admin_listen {
            Some(a) => Some(a?),
            None => None,
        },
        threads,
        work_stealing: s.work_stealing,
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        grace_period: s.grace_period,
        graceful_shutdown_timeout: s.graceful_shutdown_timeout,
        client,
        tls,
        h2c: s.h2c,
        fast_path: s.fast_path.unwrap_or(true),
        trusted_proxies: crate::client_ip::TrustedProxies::new(trusted),
    })
}

pub(super) fn upstream(
    u: &file::UpstreamSection,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<UpstreamSettings> {
    let timeout = |v: Option<std::time::Duration>, d| v.unwrap_or(d);
    let connect_timeout = timeout(u.connect_timeout, file::DEFAULT_CONNECT_TIMEOUT);
    let read_timeout = timeout(u.read_timeout, file::DEFAULT_READ_TIMEOUT);
    let write_timeout = timeout(u.write_timeout, file::DEFAULT_WRITE_TIMEOUT);
    let websocket_idle_timeout = timeout(
        u.websocket_idle_timeout,
        file::DEFAULT_WEBSOCKET_IDLE_TIMEOUT,
    );
    if websocket_idle_timeout < std::time::Duration::from_secs(40) {
        p.add("upstream.websocket_idle_timeout: must be at least 40s (Stream's health check comes every ~30s)");
    }
    for (k, v) in [
        ("connect_timeout", connect_timeout),
        ("read_timeout", read_timeout),
        ("write_timeout", write_timeout),
    ] {
        if v.is_zero() {
            p.add(format!("upstream.{k}: must be more than 0s"));
        }
    }
    let (tls, rest) = if let Some(r) = u.url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = u.url.strip_prefix("http://") {
        (false, r)
    } else {
        p.add("upstream.url: must start with https:// or http://");
        return None;
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        p.add("upstream.url: must be scheme://host[:port] with no path, query or user info");
        return None;
    }
    let uri: http::uri::Authority = match authority.parse() {
        Ok(a) => a,
        Err(_) => {
            p.add("upstream.url: the host is not valid");
            return None;
        }
    };
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let ca_file = match &u.ca {
        Some(reference) => Some(certs::upstream_ca(reference, tls, base_dir, p)?),
        None => None,
    };
    Some(UpstreamSettings {
        tls,
        host: uri
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
        authority: authority.to_string(),
        connect_timeout,
        read_timeout,
        write_timeout,
        idle_timeout: timeout(u.idle_timeout, file::DEFAULT_IDLE_TIMEOUT),
        websocket_idle_timeout,
        ca_file,
    })
}
