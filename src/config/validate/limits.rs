//! Validation of `[tenants.limits]` rates and routes, and of `[redis]`.

use std::str::FromStr;

use super::super::file;
use super::super::RedisSettings;
use super::Problems;
use crate::policy::{Policy, Rule};

pub(super) fn redis(r: &file::RedisSection, p: &mut Problems) -> Option<RedisSettings> {
    if !r.url.starts_with("redis://") {
        // rediss:// would need the redis crate's TLS feature, not built in.
        p.add("redis.url: must start with redis:// (TLS to Redis is not supported yet)");
        return None;
    }
    let on_error = match r.on_redis_error.as_deref() {
        None | Some("local") => crate::quota::OnRedisError::Local,
        Some("deny") => crate::quota::OnRedisError::Deny,
        Some(_) => {
            p.add("redis.on_redis_error: must be \"local\" or \"deny\"");
            return None;
        }
    };
    let timeout = r.timeout.unwrap_or(file::DEFAULT_REDIS_TIMEOUT);
    if timeout.is_zero() {
        p.add("redis.timeout: must be more than 0s");
    }
    let revocation_poll = r.revocation_poll.unwrap_or(file::DEFAULT_REVOCATION_POLL);
    Some(RedisSettings {
        url: r.url.clone(),
        timeout,
        on_error,
        revocation_poll: (!revocation_poll.is_zero()).then_some(revocation_poll),
    })
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
                    .is_some_and(|pol| !pol.table().routes().iter().any(|rt| rt.operation == op))
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

pub(super) fn rate(
    name: &str,
    key: &str,
    r: Option<&file::RateSection>,
    p: &mut Problems,
) -> Option<crate::limits::Rate> {
    let r = r?;
    let (count, window) = match parse_rate(&r.rate) {
        Ok(v) => v,
        Err(e) => {
            p.add(format!("{name}.limits.{key}.rate: {e}"));
            return None;
        }
    };
    let out = crate::limits::Rate::new(count, window, r.burst);
    if out.is_none() {
        p.add(format!("{name}.limits.{key}.burst: must be at least 1"));
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
