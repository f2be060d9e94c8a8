//! The request policy: decides, per request, whether the gateway forwards it to
//! Stream (client-side operations), refuses it (server-side operations, unknown
//! routes unless allowed, malformed paths), and with which canonical path.
//!
//! Config override rules (`Rule`) are parsed and applied here, and the syntax
//! of methods, templates and operation names (shared with the table) is
//! checked here. Path syntax lives in `normalize.rs`, route matching in
//! `table.rs`. Nothing here touches headers, query strings, bodies or tokens;
//! the proxy layer handles those.

pub mod normalize;
pub mod table;

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use table::{is_placeholder, template_segments};

pub use normalize::{normalize, NormalizedPath, PathError};
pub use table::{Route, RouteMatch, RouteSource, RouteTable, Side, TableError};

/// What to do with a request whose (method, path) is in no table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownRoutes {
    Deny,
    Allow,
}

/// One override rule from config: either "METHOD /template" (template uses
/// {name} placeholders) or a bare operation name like "SendMessage".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Route { method: String, template: String },
    Operation(String),
}

impl FromStr for Rule {
    type Err = TableError;

    fn from_str(text: &str) -> Result<Rule, TableError> {
        let text = text.trim();
        let bad = |reason: String| TableError::BadRule {
            rule: text.to_string(),
            reason,
        };
        match text.split_once(char::is_whitespace) {
            Some((method, template)) => {
                let template = template.trim_start();
                validate_method(method).map_err(bad)?;
                validate_template(template).map_err(bad)?;
                Ok(Rule::Route {
                    method: method.to_string(),
                    template: template.to_string(),
                })
            }
            None if text.starts_with('/') => Err(bad(
                "a route rule needs a method first, e.g. \"GET /channels/{type}/{id}\"".to_string(),
            )),
            None => {
                validate_operation(text).map_err(bad)?;
                Ok(Rule::Operation(text.to_string()))
            }
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Route { method, template } => write!(f, "{method} {template}"),
            Rule::Operation(operation) => f.write_str(operation),
        }
    }
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Forward upstream with this path (query string untouched by the policy).
    Forward {
        path: String,
        operation: Arc<str>,
        template: Arc<str>,
    },
    RefuseServerRoute {
        operation: Arc<str>,
        template: Arc<str>,
    },
    RefuseUnknownRoute,
    BadPath(PathError),
}

/// Operation name given to routes that exist only because a config rule named them.
const CONFIG_OPERATION: &str = "ConfigRoute";
pub const UNKNOWN_OPERATION: &str = "Unknown";
const UNKNOWN_TEMPLATE: &str = "unknown";

#[derive(Debug, Clone)]
pub struct Policy {
    table: RouteTable,
    unknown: UnknownRoutes,
}

impl Policy {
    /// Builds from the embedded table; `deny` rules are applied after `allow`
    /// rules (deny wins on conflict). An operation rule that names no operation
    /// in the table is an error, so config typos are caught at startup. A route
    /// rule for an unknown (method, template) adds a route with source Config
    /// and operation "ConfigRoute".
    pub fn new(
        unknown: UnknownRoutes,
        allow: &[Rule],
        deny: &[Rule],
    ) -> Result<Policy, TableError> {
        let mut table = RouteTable::embedded();
        for rule in allow {
            apply_rule(&mut table, rule, Side::Client)?;
        }
        for rule in deny {
            apply_rule(&mut table, rule, Side::Server)?;
        }
        Ok(Policy { table, unknown })
    }

    pub fn decide(&self, method: &str, raw_path: &str) -> Decision {
        self.classify(method, raw_path, false)
    }

    /// The decision for a service account: client and server routes are both
    /// forwarded (the account's scope decides, not the table's side); unknown
    /// routes as for users. Never `RefuseServerRoute`.
    pub fn decide_service(&self, method: &str, raw_path: &str) -> Decision {
        self.classify(method, raw_path, true)
    }

    fn classify(&self, method: &str, raw_path: &str, server_allowed: bool) -> Decision {
        let path = match normalize(raw_path) {
            Ok(path) => path,
            Err(error) => return Decision::BadPath(error),
        };
        match self.table.classify(method, &path) {
            Some(found) => match found.route.side {
                Side::Server if !server_allowed => Decision::RefuseServerRoute {
                    operation: found.route.operation.clone(),
                    template: found.route.template.clone(),
                },
                Side::Client | Side::Server => Decision::Forward {
                    path: found.canonical_path,
                    operation: found.route.operation.clone(),
                    template: found.route.template.clone(),
                },
            },
            None => match self.unknown {
                UnknownRoutes::Allow => Decision::Forward {
                    path: path.to_path_string(),
                    operation: UNKNOWN_OPERATION.into(),
                    template: UNKNOWN_TEMPLATE.into(),
                },
                UnknownRoutes::Deny => Decision::RefuseUnknownRoute,
            },
        }
    }

    pub fn table(&self) -> &RouteTable {
        &self.table
    }

    /// Human-readable policy table for `stream-gateway routes`: one line per
    /// route (METHOD, TEMPLATE, side, OPERATION, source; tab-separated), then
    /// "unknown routes: deny|allow".
    pub fn render(&self) -> String {
        let mut out = String::new();
        for route in self.table.routes() {
            out.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\n",
                route.method,
                route.template,
                route.side.as_str(),
                route.operation,
                route.source.as_str()
            ));
        }
        let unknown = match self.unknown {
            UnknownRoutes::Deny => "deny",
            UnknownRoutes::Allow => "allow",
        };
        out.push_str(&format!("unknown routes: {unknown}\n"));
        out
    }
}

fn apply_rule(table: &mut RouteTable, rule: &Rule, side: Side) -> Result<(), TableError> {
    match rule {
        Rule::Route { method, template } => table.add_route(
            method,
            template,
            side,
            CONFIG_OPERATION,
            RouteSource::Config,
        ),
        Rule::Operation(operation) => {
            // Checked separately because set_side_by_operation reports only
            // changes, and a rule that repeats the default is not a typo.
            if !table.routes().iter().any(|r| &*r.operation == operation) {
                return Err(TableError::UnknownOperation(operation.clone()));
            }
            table.set_side_by_operation(operation, side);
            Ok(())
        }
    }
}

fn validate_route(method: &str, template: &str, operation: &str) -> Result<(), String> {
    validate_method(method)?;
    validate_template(template)?;
    validate_operation(operation)
}

/// HTTP methods are case-sensitive, and the table only holds uppercase ones.
fn validate_method(method: &str) -> Result<(), String> {
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("method {method:?} must be uppercase letters A-Z"));
    }
    Ok(())
}

fn validate_operation(operation: &str) -> Result<(), String> {
    if operation.is_empty()
        || !operation
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(format!("operation {operation:?} must be [A-Za-z0-9_]+"));
    }
    Ok(())
}

/// A template is valid when every literal segment is something `normalize`
/// can output unchanged; otherwise the route could never match, and the
/// canonical path built from it would not re-normalise to itself.
fn validate_template(template: &str) -> Result<(), String> {
    if !template.starts_with('/') {
        return Err(format!("template {template:?} must start with '/'"));
    }
    if template.contains('?') {
        return Err(format!("template {template:?} must not contain '?'"));
    }
    if template.contains(char::is_whitespace) {
        return Err(format!("template {template:?} must not contain whitespace"));
    }
    for segment in template_segments(template) {
        if segment.is_empty() {
            return Err(format!("template {template:?} has an empty segment"));
        }
        if is_placeholder(segment) {
            let name = &segment[1..segment.len() - 1];
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("placeholder {segment:?} must be {{[A-Za-z0-9_]+}}"));
            }
        } else if segment == "." || segment == ".." || !segment.bytes().all(is_literal_byte) {
            return Err(format!(
                "segment {segment:?} must be a whole {{placeholder}} or plain text (no '%', '.' or '..' segments, braces or reserved characters)"
            ));
        }
    }
    Ok(())
}

fn is_literal_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,=:@".contains(&byte)
}

#[cfg(test)]
mod rule_tests {
    use super::*;

    #[test]
    fn rules_parse_and_validate() {
        let route = |m: &str, t: &str| Rule::Route {
            method: m.into(),
            template: t.into(),
        };
        let good = [
            ("SendMessage", Rule::Operation("SendMessage".into())),
            ("  Op_2 ", Rule::Operation("Op_2".into())),
            (
                "GET /channels/{type}/{id}",
                route("GET", "/channels/{type}/{id}"),
            ),
            ("POST   /x", route("POST", "/x")),
        ];
        for (text, expected) in good {
            assert_eq!(text.parse::<Rule>().unwrap(), expected, "{text:?}");
        }
        assert_eq!(route("GET", "/x").to_string(), "GET /x");
        let bad = "|get /x|GET x|GET /x//y|GET /x/|GET /x?y=1|GET /x y|/x|Send-Message|G3T /x";
        for text in bad.split('|') {
            let result = text.parse::<Rule>();
            assert!(
                matches!(result, Err(TableError::BadRule { .. })),
                "{text:?}: {result:?}"
            );
        }
    }

    #[test]
    fn render_lists_every_route_then_the_unknown_mode() {
        let policy = Policy::new(UnknownRoutes::Deny, &[], &[]).unwrap();
        let text = policy.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), policy.table().routes().len() + 1);
        assert_eq!(lines[0], "GET\t/app\tclient\tGetApp\tspec");
        assert!(lines.contains(&"GET\t/connect\tclient\tConnect\tjs-client"));
        assert_eq!(lines[lines.len() - 1], "unknown routes: deny");
    }
}
