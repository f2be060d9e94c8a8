//! Path normalisation and route matching.
//!
//! Input: the first byte picks the method, the rest is the raw request path.
//! Invariants, for three policies (config defaults = deny unknown routes;
//! allow unknown routes; the allow/deny rules of config/gateway.toml):
//! - `normalize` output is plain ASCII, has no dot or empty segment, and
//!   re-normalises to itself; `decide` refuses exactly what `normalize` refuses;
//! - a classified path's canonical (forwarded) path re-normalises to a path
//!   that classifies to the same route with the same canonical path, and
//!   differs from the request path only in the case of literal segments;
//! - a service account's decision is the user's, except that server routes
//!   are forwarded (same operation and template, a fixed point too);
//! - a `Forward` decides to the identical `Forward` again (the path Stream
//!   sees is the path that was classified), and no server-side route of the
//!   policy's table, for that method, matches a forwarded path.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stream_gateway::policy::normalize::MAX_PATH_BYTES;
use stream_gateway::policy::{normalize, Decision, Policy, Rule, Side, UnknownRoutes};

const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "get", "Post", "CONNECT",
];

fn policies() -> &'static [Policy; 3] {
    static POLICIES: OnceLock<[Policy; 3]> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let rules =
            |list: &[&str]| -> Vec<Rule> { list.iter().map(|r| r.parse().unwrap()).collect() };
        [
            Policy::new(UnknownRoutes::Deny, &[], &[]).unwrap(),
            Policy::new(UnknownRoutes::Allow, &[], &[]).unwrap(),
            Policy::new(
                UnknownRoutes::Deny,
                &rules(&["GET /hook/events", "UpdateApp"]),
                &rules(&["DeleteChannels", "POST /users", "SendMessage"]),
            )
            .unwrap(),
        ]
    })
}

/// Does `path` (normalised, canonical) fit `template`? Placeholders take any
/// segment, literals compare ignoring ASCII case (as the table does).
fn template_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').skip(1).collect();
    let p: Vec<&str> = path.split('/').skip(1).filter(|s| !s.is_empty()).collect();
    t.len() == p.len()
        && t.iter().zip(&p).all(|(t, p)| {
            (t.len() >= 2 && t.starts_with('{') && t.ends_with('}')) || t.eq_ignore_ascii_case(p)
        })
}

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let method = METHODS[usize::from(m) % METHODS.len()];
    let raw = String::from_utf8_lossy(rest);
    let normalized = normalize(&raw);
    if let Ok(path) = &normalized {
        let text = path.to_path_string();
        assert!(
            text.is_ascii() && text.starts_with('/'),
            "{raw:?} -> {text:?}"
        );
        assert!(
            text.len() <= MAX_PATH_BYTES,
            "{raw:?} -> {} bytes",
            text.len()
        );
        assert!(
            !text.contains([';', '\\', '?', '#', ' ', '\0']),
            "{raw:?} -> {text:?}"
        );
        for segment in path.segments() {
            assert!(
                !segment.is_empty() && segment != "." && segment != "..",
                "{raw:?} -> {text:?}"
            );
        }
        assert_eq!(
            normalize(&text).as_ref(),
            Ok(path),
            "re-normalising {text:?} from {raw:?}"
        );
    }
    for policy in policies() {
        let decision = policy.decide(method, &raw);
        let path = match &normalized {
            Err(e) => {
                assert_eq!(decision, Decision::BadPath(e.clone()), "{method} {raw:?}");
                continue;
            }
            Ok(path) => path,
        };
        let text = path.to_path_string();
        if let Some(found) = policy.table().classify(method, path) {
            let canonical = &found.canonical_path;
            assert!(
                canonical.eq_ignore_ascii_case(&text),
                "{raw:?}: {text:?} vs {canonical:?}"
            );
            let again = normalize(canonical)
                .unwrap_or_else(|e| panic!("canonical {canonical:?} of {raw:?} refused: {e}"));
            assert_eq!(&again.to_path_string(), canonical, "{raw:?}");
            let second = policy.table().classify(method, &again).unwrap_or_else(|| {
                panic!("{method} {canonical:?} (from {raw:?}) no longer classifies")
            });
            assert!(
                std::ptr::eq(second.route, found.route) && &second.canonical_path == canonical,
                "{method} {raw:?}: {:?} then {:?}",
                found.route,
                second.route
            );
            match found.route.side {
                Side::Client => assert!(
                    matches!(&decision, Decision::Forward { path, template, .. }
                        if path == canonical && template == &found.route.template),
                    "{method} {raw:?}: {decision:?}"
                ),
                Side::Server => assert!(
                    matches!(&decision, Decision::RefuseServerRoute { template, .. }
                        if template == &found.route.template),
                    "{method} {raw:?}: {decision:?}"
                ),
            }
        }
        // Service accounts: every classified route is forwarded (their scope
        // is checked against this operation), at a path that decides the same.
        let service = policy.decide_service(method, &raw);
        match (&decision, &service) {
            (
                Decision::RefuseServerRoute {
                    operation,
                    template,
                },
                Decision::Forward {
                    operation: o,
                    template: t,
                    path: forwarded,
                },
            ) => {
                assert!(
                    o == operation && t == template,
                    "{method} {raw:?}: {service:?}"
                );
                assert_eq!(
                    &policy.decide_service(method, forwarded),
                    &service,
                    "{method} {raw:?}"
                );
            }
            _ => assert_eq!(service, decision, "{method} {raw:?}"),
        }
        if let Decision::Forward {
            path: forwarded,
            template,
            ..
        } = &decision
        {
            assert_eq!(
                &policy.decide(method, forwarded),
                &decision,
                "{method} {raw:?} forwarded as {forwarded:?}"
            );
            for route in policy.table().routes() {
                if route.side == Side::Server && route.method == method {
                    assert!(
                        !template_matches(&route.template, forwarded),
                        "{method} {raw:?} forwarded as {forwarded:?} ({template}) but the server route {} matches it",
                        route.template
                    );
                }
            }
        }
    }
});
