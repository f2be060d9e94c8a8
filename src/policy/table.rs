//! The route table: every known Stream Chat operation (embedded TSVs plus config
//! overrides) compiled into a segment trie, and the lookup that classifies a
//! normalised path as a client or a server operation.
//!
//! Path syntax is handled in `normalize.rs` before anything gets here; the
//! forward/refuse decision, config rule parsing and the syntax checks for
//! methods, templates and operation names live in `mod.rs`.

use std::cmp::Ordering;
use std::sync::Arc;

use super::normalize::{NormalizedPath, Segments};
use super::validate_route;

mod tsv;
use tsv::{duplicate, operation_from_js_function, tsv_rows};

/// Which half of the Stream API an operation belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }
}

/// Where a route's entry came from, shown by `stream-gateway routes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteSource {
    Spec,
    JsClientUnlisted,
    Config,
}

impl RouteSource {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteSource::Spec => "spec",
            RouteSource::JsClientUnlisted => "js-client",
            RouteSource::Config => "config",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Uppercase HTTP method.
    pub method: String,
    /// Path template as written in the TSV, e.g. `/channels/{type}/{id}`
    /// (shared: every request's decision and audit record refer to it).
    pub template: Arc<str>,
    pub side: Side,
    pub operation: Arc<str>,
    pub source: RouteSource,
}

/// A classified request: the route and the path to forward, which is the
/// request path with each literal segment spelt as in the template.
#[derive(Debug)]
pub struct RouteMatch<'a> {
    pub route: &'a Route,
    pub canonical_path: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("{file} line {line}: {reason}")]
    BadRow {
        file: &'static str,
        line: usize,
        reason: String,
    },
    #[error("{file} line 1: header must start with {expected:?}")]
    BadHeader {
        file: &'static str,
        expected: &'static str,
    },
    #[error("{file} line {line}: {method} {template} is listed twice")]
    DuplicateRoute {
        file: &'static str,
        line: usize,
        method: String,
        template: String,
    },
    #[error("bad rule {rule:?}: {reason}")]
    BadRule { rule: String, reason: String },
    #[error("bad route {method} {template}: {reason}")]
    BadRoute {
        method: String,
        template: String,
        reason: String,
    },
    #[error("no route has the operation {0:?}")]
    UnknownOperation(String),
}

const ROUTES_FILE: &str = "routes.tsv";
const UNLISTED_FILE: &str = "js-client-unlisted-routes.tsv";
const ROUTES_HEADER: &str = "method\tpath\tside\toperation";
const UNLISTED_HEADER: &str = "method\tpath\tside_guess\tjs_function";

#[derive(Debug, Clone, Default)]
struct Node {
    /// Sorted with `cmp_ignore_ascii_case` so lookup is a binary search that
    /// needs no lowercase copy of the request segment.
    literals: Vec<(Box<str>, usize)>,
    wildcard: Option<usize>,
    /// (method, index into `RouteTable::routes`); a handful at most.
    routes: Vec<(Box<str>, usize)>,
}

#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Arena; index 0 is the root.
    nodes: Vec<Node>,
    /// Longest template, so deeper paths are rejected without a walk.
    max_depth: usize,
}

impl RouteTable {
    pub fn embedded() -> RouteTable {
        RouteTable::from_tsv(
            include_str!("data/routes.tsv"),
            include_str!("data/js-client-unlisted-routes.tsv"),
        )
        .expect("embedded route TSVs are checked by the table unit tests")
    }

    pub fn from_tsv(routes_tsv: &str, unlisted_tsv: &str) -> Result<RouteTable, TableError> {
        let mut table = RouteTable {
            routes: Vec::new(),
            nodes: vec![Node::default()],
            max_depth: 0,
        };
        for (line, cols) in tsv_rows(ROUTES_FILE, ROUTES_HEADER, routes_tsv)? {
            let bad = |reason: String| TableError::BadRow {
                file: ROUTES_FILE,
                line,
                reason,
            };
            let [method, template, side, operation] = cols;
            let side = match side {
                "client" => Side::Client,
                "server" => Side::Server,
                other => return Err(bad(format!("side must be client or server, not {other:?}"))),
            };
            validate_route(method, template, operation).map_err(bad)?;
            if table
                .insert(method, template, side, operation, RouteSource::Spec)
                .is_err()
            {
                return Err(duplicate(ROUTES_FILE, line, method, template));
            }
        }
        for (line, cols) in tsv_rows(UNLISTED_FILE, UNLISTED_HEADER, unlisted_tsv)? {
            let bad = |reason: String| TableError::BadRow {
                file: UNLISTED_FILE,
                line,
                reason,
            };
            let [method, template, side_guess, js_function] = cols;
            // An unverified guess is treated as client: the JS client really
            // sends these, and Stream still checks the user's permissions.
            let side = match side_guess {
                "server" => Side::Server,
                "client" | "unknown" => Side::Client,
                other => return Err(bad(format!("unknown side_guess {other:?}"))),
            };
            let operation = if method == "GET" && template == "/connect" {
                // The JS function is a URL builder, not the operation's name.
                "Connect".to_string()
            } else {
                operation_from_js_function(js_function)
            };
            validate_route(method, template, &operation).map_err(bad)?;
            let source = RouteSource::JsClientUnlisted;
            if let Err(existing) = table.insert(method, template, side, &operation, source) {
                // The spec wins over what the JS client was seen to call.
                if table.routes[existing].source != RouteSource::Spec {
                    return Err(duplicate(UNLISTED_FILE, line, method, template));
                }
            }
        }
        Ok(table)
    }

    pub fn classify(&self, method: &str, path: &NormalizedPath<'_>) -> Option<RouteMatch<'_>> {
        if path.segment_count() > self.max_depth {
            return None;
        }
        let route = &self.routes[self.lookup(0, path.segments(), method)?];
        let mut canonical_path = String::with_capacity(path.as_str().len());
        for (template_segment, segment) in template_segments(&route.template).zip(path.segments()) {
            canonical_path.push('/');
            canonical_path.push_str(if is_placeholder(template_segment) {
                segment
            } else {
                template_segment
            });
        }
        Some(RouteMatch {
            route,
            canonical_path,
        })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Inserts a route, or, when a route with the same method and path shape
    /// exists (placeholder names and literal case ignored), changes its side.
    pub fn add_route(
        &mut self,
        method: &str,
        template: &str,
        side: Side,
        operation: &str,
        source: RouteSource,
    ) -> Result<(), TableError> {
        validate_route(method, template, operation).map_err(|reason| TableError::BadRoute {
            method: method.to_string(),
            template: template.into(),
            reason,
        })?;
        if let Err(existing) = self.insert(method, template, side, operation, source) {
            self.routes[existing].side = side;
        }
        Ok(())
    }

    /// Returns how many routes changed side (an operation usually has a v1 and
    /// an `/api/v2` route).
    pub fn set_side_by_operation(&mut self, operation: &str, side: Side) -> usize {
        let mut changed = 0;
        for route in self
            .routes
            .iter_mut()
            .filter(|r| &*r.operation == operation)
        {
            if route.side != side {
                route.side = side;
                changed += 1;
            }
        }
        changed
    }

    /// Literal first, then the wildcard if the literal branch holds no route
    /// for this method: `GET /messages/history` falls back to
    /// `GET /messages/{id}`. Depth is bounded by `max_depth`, so the
    /// backtracking stays tiny.
    fn lookup(&self, node: usize, mut segments: Segments<'_>, method: &str) -> Option<usize> {
        let node = &self.nodes[node];
        let Some(first) = segments.next() else {
            return node
                .routes
                .iter()
                .find(|(m, _)| &**m == method)
                .map(|&(_, index)| index);
        };
        if let Ok(pos) = node
            .literals
            .binary_search_by(|(literal, _)| cmp_ignore_ascii_case(literal, first))
        {
            if let Some(found) = self.lookup(node.literals[pos].1, segments.clone(), method) {
                return Some(found);
            }
        }
        node.wildcard
            .and_then(|child| self.lookup(child, segments, method))
    }

    /// Adds a route unless one with the same method and path shape exists
    /// (placeholder names and literal case ignored), whose index is returned
    /// as the error. The caller has validated the parts.
    fn insert(
        &mut self,
        method: &str,
        template: &str,
        side: Side,
        operation: &str,
        source: RouteSource,
    ) -> Result<(), usize> {
        let mut node = 0;
        let mut depth = 0;
        for segment in template_segments(template) {
            depth += 1;
            node = if is_placeholder(segment) {
                match self.nodes[node].wildcard {
                    Some(child) => child,
                    None => {
                        let child = self.new_node();
                        self.nodes[node].wildcard = Some(child);
                        child
                    }
                }
            } else {
                let search = self.nodes[node]
                    .literals
                    .binary_search_by(|(literal, _)| cmp_ignore_ascii_case(literal, segment));
                match search {
                    Ok(pos) => self.nodes[node].literals[pos].1,
                    Err(pos) => {
                        let child = self.new_node();
                        let literals = &mut self.nodes[node].literals;
                        literals.insert(pos, (segment.into(), child));
                        child
                    }
                }
            };
        }
        // Nodes created above are never left empty: a route is pushed below
        // unless the shape already existed, in which case none were created.
        let routes = &mut self.nodes[node].routes;
        if let Some(&(_, existing)) = routes.iter().find(|(m, _)| &**m == method) {
            return Err(existing);
        }
        routes.push((method.into(), self.routes.len()));
        self.max_depth = self.max_depth.max(depth);
        self.routes.push(Route {
            method: method.to_string(),
            template: template.into(),
            side,
            operation: operation.into(),
            source,
        });
        Ok(())
    }

    fn new_node(&mut self) -> usize {
        self.nodes.push(Node::default());
        self.nodes.len() - 1
    }
}

pub(super) fn template_segments(template: &str) -> std::str::Split<'_, char> {
    template.strip_prefix('/').unwrap_or(template).split('/')
}

pub fn is_placeholder(segment: &str) -> bool {
    segment.len() >= 2 && segment.starts_with('{') && segment.ends_with('}')
}

fn cmp_ignore_ascii_case(a: &str, b: &str) -> Ordering {
    a.bytes()
        .map(|b| b.to_ascii_lowercase())
        .cmp(b.bytes().map(|b| b.to_ascii_lowercase()))
}
