//! Request-body policy: a size cap on every body (uploads stream through,
//! never buffered whole), and server-only fields.
//!
//! Stream's client-side spec removes some fields from client requests (e.g.
//! `user_id`/`user` in 43 request bodies, `role`/`teams` in user objects,
//! `html` in messages, `force_moderation`/`pending` in `SendMessage`). The
//! table of where each sits, per operation, is derived from Stream's specs
//! (`src/policy/data/server-only-paths.tsv`, embedded at build time). For
//! those operations only, the JSON body (at most `max_inspected_body` bytes)
//! or the `payload` query document is parsed, and a request carrying such a
//! field is refused (`refuse`, the default: 400 code 4 naming the field),
//! has it removed (`strip`), or goes as is (`pass`). Every other body streams
//! through untouched.

use std::collections::HashMap;

use serde_json::Value;

/// The derived table (see `src/policy/data/SOURCE.md`).
const PATHS_TSV: &str = include_str!("policy/data/server-only-paths.tsv");

/// Default cap on any request body (Stream's own upload limit is 100 MB).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 100 * 1024 * 1024;
/// Default and maximum size of a body parsed for server-only fields
/// (pingora keeps a read-ahead body of at most 64 KiB for forwarding).
pub const MAX_INSPECTED_BODY: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerOnlyMode {
    Refuse,
    Strip,
    Pass,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// The JSON request body.
    Body,
    /// The JSON `payload` query parameter (GET queries).
    Payload,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    /// Every element of an array.
    Array,
    /// Every value of an object used as a map.
    Map,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRule {
    pub location: Location,
    path: Vec<Seg>,
    pub field: String,
}

/// Server-only field rules by route template, then method (looked up per
/// request by `&str`, no owned key built).
#[derive(Debug, Clone, Default)]
pub struct ServerOnlyFields {
    by_template: HashMap<String, Vec<(String, Vec<FieldRule>)>, ahash::RandomState>,
}

impl ServerOnlyFields {
    /// The table embedded at build time.
    pub fn embedded() -> ServerOnlyFields {
        Self::parse(PATHS_TSV)
    }

    fn parse(tsv: &str) -> ServerOnlyFields {
        let mut fields = ServerOnlyFields::default();
        for line in tsv.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let cols: Vec<&str> = line.split('\t').collect();
            let [method, route, location, json_path, field] = cols[..] else {
                continue;
            };
            let location = match location {
                "payload" => Location::Payload,
                _ => Location::Body,
            };
            let path = json_path
                .split('.')
                .filter(|s| !s.is_empty())
                .map(|s| match s {
                    "[]" => Seg::Array,
                    "{}" => Seg::Map,
                    k => Seg::Key(k.to_string()),
                })
                .collect();
            fields.entry(method, path_template(route)).push(FieldRule {
                location,
                path,
                field: field.to_string(),
            });
        }
        fields
    }

    /// The rules of (method, template), created empty if missing.
    fn entry(&mut self, method: &str, template: String) -> &mut Vec<FieldRule> {
        let methods = self.by_template.entry(template).or_default();
        let at = match methods.iter().position(|(m, _)| m == method) {
            Some(at) => at,
            None => {
                methods.push((method.to_string(), Vec::new()));
                methods.len() - 1
            }
        };
        &mut methods[at].1
    }

    pub fn rules(&self, method: &str, template: &str) -> Option<&[FieldRule]> {
        self.by_template
            .get(template)?
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, rules)| rules.as_slice())
    }

    /// How many (method, template) pairs have rules.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_template.values().map(Vec::len).sum()
    }

    /// Re-keys the rules by the route table's own templates (placeholder
    /// names as the table writes them), so a request looks its operation up
    /// without rewriting its template.
    pub fn keyed_by(&self, policy: &crate::policy::Policy) -> ServerOnlyFields {
        let mut keyed = ServerOnlyFields::default();
        for r in policy.table().routes() {
            if let Some(rules) = self.rules(&r.method, &path_template(&r.template)) {
                *keyed.entry(&r.method, r.template.to_string()) = rules.to_vec();
            }
        }
        keyed
    }
}

/// Placeholders are wildcards: `{message_id}` and `{id}` are the same segment.
pub fn path_template(path: &str) -> String {
    path.split('/')
        .map(|s| if s.starts_with('{') { "{}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

/// The first server-only field present in `doc` for `location`, as a dotted
/// path (`message.html`, `members[].user.role`).
pub fn find(doc: &Value, rules: &[FieldRule], location: Location) -> Option<String> {
    rules
        .iter()
        .filter(|r| r.location == location)
        .find(|r| present(doc, &r.path, &r.field))
        .map(|r| display(&r.path, &r.field))
}

/// Removes every server-only field for `location`; returns how many.
pub fn strip(doc: &mut Value, rules: &[FieldRule], location: Location) -> usize {
    let mut removed = 0;
    for r in rules.iter().filter(|r| r.location == location) {
        visit_mut(doc, &r.path, &mut |obj: &mut Value| {
            if let Some(map) = obj.as_object_mut() {
                if map.remove(&r.field).is_some() {
                    removed += 1;
                }
            }
        });
    }
    removed
}

fn present(v: &Value, path: &[Seg], field: &str) -> bool {
    match path.split_first() {
        None => v.get(field).is_some(),
        Some((Seg::Key(k), rest)) => v.get(k.as_str()).is_some_and(|n| present(n, rest, field)),
        Some((Seg::Array, rest)) => v
            .as_array()
            .is_some_and(|items| items.iter().any(|i| present(i, rest, field))),
        Some((Seg::Map, rest)) => v
            .as_object()
            .is_some_and(|m| m.values().any(|i| present(i, rest, field))),
    }
}

fn visit_mut(v: &mut Value, path: &[Seg], f: &mut dyn FnMut(&mut Value)) {
    match path.split_first() {
        None => f(v),
        Some((Seg::Key(k), rest)) => {
            if let Some(next) = v.get_mut(k.as_str()) {
                visit_mut(next, rest, f);
            }
        }
        Some((Seg::Array, rest)) => {
            if let Some(items) = v.as_array_mut() {
                for item in items {
                    visit_mut(item, rest, f);
                }
            }
        }
        Some((Seg::Map, rest)) => {
            if let Some(map) = v.as_object_mut() {
                for item in map.values_mut() {
                    visit_mut(item, rest, f);
                }
            }
        }
    }
}

fn display(path: &[Seg], field: &str) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Array => out.push_str("[]"),
            Seg::Map => out.push_str("{}"),
        }
    }
    if !out.is_empty() {
        out.push('.');
    }
    out.push_str(field);
    out
}

/// The body policy of a config (`[policy]`).
#[derive(Debug, Clone)]
pub struct BodyPolicy {
    pub max_body_bytes: u64,
    pub server_only: ServerOnlyMode,
    pub max_inspected: usize,
    pub fields: ServerOnlyFields,
}

impl BodyPolicy {
    /// The defaults, with rules keyed for `policy`'s route table.
    pub fn new(policy: &crate::policy::Policy) -> BodyPolicy {
        BodyPolicy {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            server_only: ServerOnlyMode::Refuse,
            max_inspected: MAX_INSPECTED_BODY,
            fields: ServerOnlyFields::embedded().keyed_by(policy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn embedded_table_has_the_known_cases() {
        let policy =
            crate::policy::Policy::new(crate::policy::UnknownRoutes::Deny, &[], &[]).unwrap();
        let keyed = ServerOnlyFields::embedded().keyed_by(&policy);
        // Every derived rule names a route the table knows.
        assert_eq!(keyed.len(), ServerOnlyFields::embedded().len());
        let t = ServerOnlyFields::embedded();
        let send = t
            .rules("POST", &path_template("/channels/{type}/{id}/message"))
            .unwrap();
        let body = |doc: Value| find(&doc, send, Location::Body);
        assert_eq!(body(json!({"message": {"text": "hi"}})), None);
        assert_eq!(
            body(json!({"message": {"text": "hi", "html": "<b>x</b>"}})),
            Some("message.html".into())
        );
        assert_eq!(
            body(json!({"message": {"text": "hi"}, "force_moderation": true})),
            Some("force_moderation".into())
        );
        assert_eq!(
            body(json!({"message": {"text": "hi", "user_id": "boss"}})),
            Some("message.user_id".into())
        );
        let draft = t
            .rules("POST", &path_template("/channels/{type}/{id}/draft"))
            .unwrap();
        assert_eq!(
            find(
                &json!({"message": {"text": "x", "html": "<i>"}}),
                draft,
                Location::Body
            ),
            Some("message.html".into())
        );
        let watch = t
            .rules("POST", &path_template("/channels/{type}/{id}/query"))
            .unwrap();
        assert_eq!(
            find(
                &json!({"data": {"created_by": {"id": "a", "role": "admin"}}}),
                watch,
                Location::Body
            ),
            Some("data.created_by.role".into())
        );
        assert_eq!(
            find(
                &json!({"data": {"members": [{"user": {"id": "a", "shadow_banned": true}}]}}),
                watch,
                Location::Body
            ),
            Some("data.members[].user.shadow_banned".into())
        );
        let users = t.rules("GET", "/users").unwrap();
        assert_eq!(
            find(&json!({"user_id": "x"}), users, Location::Payload),
            Some("user_id".into())
        );
        assert_eq!(find(&json!({"user_id": "x"}), users, Location::Body), None);
    }

    #[test]
    fn strip_removes_every_occurrence() {
        let t = ServerOnlyFields::embedded();
        let watch = t
            .rules("POST", &path_template("/channels/{type}/{id}/query"))
            .unwrap();
        let mut doc = json!({"state": true, "data": {
            "created_by": {"id": "a", "role": "admin"},
            "members": [
                {"user": {"id": "a", "invisible": true, "shadow_banned": false}},
                {"user": {"id": "b"}}
            ]
        }});
        assert_eq!(strip(&mut doc, watch, Location::Body), 3);
        assert_eq!(find(&doc, watch, Location::Body), None);
        assert_eq!(doc["data"]["members"][0]["user"], json!({"id": "a"}));
        assert_eq!(doc["data"]["created_by"], json!({"id": "a"}));
        assert_eq!(doc["state"], true);
    }
}
