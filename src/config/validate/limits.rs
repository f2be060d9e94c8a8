//! Validation of `[tenants.limits]` rates, routes and `connection_caps`, and
//! of the process sections `[audit]` and `[log]` (`[redis]`:
//! `redis_section.rs`).

use std::str::FromStr;

use super::super::file;
use super::super::LogSettings;
use super::Problems;
use crate::audit::{AuditSettings, OnFull, Sink};
use crate::policy::{Policy, Rule};

/// `[tenants.limits] connection_caps`: `"local"` (default) or `"fleet"`
/// (true), which needs `[redis]` and a cap to count.
pub(super) fn connection_caps(
    name: &str,
    l: Option<&file::LimitsSection>,
    has_redis: bool,
    p: &mut Problems,
) -> bool {
    let Some(l) = l else { return false };
    let fleet = match l.connection_caps.as_deref() {
        None | Some("local") => false,
        Some("fleet") => true,
        Some(_) => {
            p.add(format!(
                "{name}.limits.connection_caps: must be \"local\" or \"fleet\""
            ));
            return false;
        }
    };
    if fleet && !has_redis {
        p.add(format!(
            "{name}.limits.connection_caps: \"fleet\" needs a [redis] section"
        ));
    }
    if fleet && l.max_connections_per_user.is_none() && l.max_connections.is_none() {
        p.add(format!(
            "{name}.limits.connection_caps: \"fleet\" needs max_connections_per_user or max_connections"
        ));
    }
    fleet
}

pub(super) fn route_limits(
    name: &str,
    routes: &[file::RouteRateSection],
    policy: Option<&Policy>,
    p: &mut Problems,
) -> Vec<(crate::limits::RouteSelector, crate::limits::Rate)> {
    use crate::limits::RouteSelector;
    let mut out = Vec::new();
    for (i, r) in routes.iter().enumerate() {
        let key = format!("{name}.limits.routes[{i}]");
        let selector = match Rule::from_str(&r.route) {
            Ok(Rule::Operation(op)) => {
                // A typo would silently limit nothing: the name must exist.
                if policy
                    .is_some_and(|pol| !pol.table().routes().iter().any(|rt| *rt.operation == *op))
                {
                    p.add(format!(
                        "{key}.route: no operation \"{op}\" in the route table"
                    ));
                    continue;
                }
                RouteSelector::Operation(op)
            }
            Ok(Rule::Route { method, template }) => RouteSelector::Route { method, template },
            Err(e) => {
                p.add(format!("{key}.route: \"{}\": {e}", r.route));
                continue;
            }
        };
        let section = file::RateSection {
            rate: r.rate.clone(),
            burst: r.burst,
        };
        if let Some(rate) = rate(name, &format!("routes[{i}]"), Some(&section), p) {
            out.push((selector, rate));
        }
    }
    out
}

/// `[tenants.quota]`: needs `[redis]`; a lease of at least 1, and only with
/// tenant-wide windows.
pub(super) fn quota(name: &str, q: &file::QuotaSection, has_redis: bool, p: &mut Problems) {
    if !has_redis {
        p.add(format!(
            "{name}.quota: shared quotas need a [redis] section"
        ));
    }
    match q.lease {
        Some(0) => p.add(format!(
            "{name}.quota.lease: must be at least 1 (1: every request counted in Redis)"
        )),
        Some(n)
            if n > 1
                && q.requests_per_minute.unwrap_or(0) == 0
                && q.requests_per_day.unwrap_or(0) == 0 =>
        {
            p.add(format!(
                "{name}.quota.lease: leases apply to requests_per_minute/day, and neither is set"
            ))
        }
        _ => {}
    }
}

pub(super) fn rate(
    name: &str,
    key: &str,
    r: Option<&file::RateSection>,
    p: &mut Problems,
) -> Option<crate::limits::Rate> {
    rate_at(&format!("{name}.limits.{key}"), r?, p)
}

/// A `{ rate, burst }` table; problems are named `{at}.rate` / `{at}.burst`.
pub(super) fn rate_at(
    at: &str,
    r: &file::RateSection,
    p: &mut Problems,
) -> Option<crate::limits::Rate> {
    let (count, window) = match parse_rate(&r.rate) {
        Ok(v) => v,
        Err(e) => {
            p.add(format!("{at}.rate: {e}"));
            return None;
        }
    };
    let out = crate::limits::Rate::new(count, window, r.burst);
    if out.is_none() {
        p.add(format!("{at}.burst: must be at least 1"));
    }
    out
}

/// Parses `"20/s"`, `"100/min"`, `"1000/h"` into (count, seconds per window).
pub(crate) fn parse_rate(s: &str) -> Result<(u32, u64), String> {
    let (n, unit) = s
        .split_once('/')
        .ok_or_else(|| format!("\"{s}\" is not N/s, N/min or N/h"))?;
    let n: u32 = n
        .trim()
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("\"{s}\": the count must be a positive integer"))?;
    let secs = match unit.trim() {
        "s" | "sec" => 1,
        "m" | "min" => 60,
        "h" | "hour" => 3600,
        _ => return Err(format!("\"{s}\": the unit must be s, min or h")),
    };
    Ok((n, secs))
}

pub(super) fn audit(
    a: &file::AuditSection,
    has_redis: bool,
    base_dir: &std::path::Path,
    p: &mut Problems,
) -> Option<AuditSettings> {
    let before = p.0.len();
    let only = |key: &str, set: bool, sink: &str, p: &mut Problems| {
        if set && a.sink != sink {
            p.add(format!("audit.{key}: only used with sink = \"{sink}\""));
        }
    };
    only("path", a.path.is_some(), "file", p);
    only("max_file_bytes", a.max_file_bytes.is_some(), "file", p);
    only("keep_files", a.keep_files.is_some(), "file", p);
    only("stream", a.stream.is_some(), "redis", p);
    only("stream_maxlen", a.stream_maxlen.is_some(), "redis", p);
    let sink = match a.sink.as_str() {
        "stdout" => Some(Sink::Stdout),
        "file" => match a.path.as_deref() {
            Some(path) if !path.is_empty() => Some(Sink::File {
                path: base_dir.join(path),
                max_bytes: a.max_file_bytes.unwrap_or(100 * 1024 * 1024),
                keep: a.keep_files.unwrap_or(5),
            }),
            _ => {
                p.add("audit.path: required with sink = \"file\"");
                None
            }
        },
        "redis" => {
            if !has_redis {
                p.add("audit.sink: \"redis\" needs a [redis] section");
            }
            Some(Sink::Redis {
                stream: a
                    .stream
                    .clone()
                    .unwrap_or_else(|| "stream-gateway:audit".into()),
                maxlen: a.stream_maxlen.unwrap_or(1_000_000),
            })
        }
        _ => {
            p.add("audit.sink: must be \"stdout\", \"file\" or \"redis\"");
            None
        }
    };
    let on_full = match a.on_full.as_deref() {
        None | Some("drop") => OnFull::Drop,
        Some("block") => OnFull::Block,
        Some(_) => {
            p.add("audit.on_full: must be \"drop\" or \"block\"");
            OnFull::Drop
        }
    };
    let queue_size = a.queue_size.unwrap_or(10_000);
    if queue_size == 0 {
        p.add("audit.queue_size: must be at least 1");
    }
    let batch = a.batch.unwrap_or(100);
    if batch == 0 {
        p.add("audit.batch: must be at least 1");
    }
    if p.0.len() != before {
        return None;
    }
    Some(AuditSettings {
        sink: sink?,
        queue_size,
        on_full,
        batch,
    })
}

pub(super) fn log(l: &file::LogSection, p: &mut Problems) -> LogSettings {
    let json = match l.format.as_deref() {
        None | Some("pretty") => false,
        Some("json") => true,
        Some(_) => {
            p.add("log.format: must be \"json\" or \"pretty\"");
            false
        }
    };
    let level = l.level.clone().unwrap_or_else(|| "info".into());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        p.add("log.level: not a level or tracing filter (e.g. \"info\", \"stream_gateway=debug,info\")");
    }
    LogSettings { json, level }
}
