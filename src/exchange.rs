//! The per-request decision, free of pingora: tenant, credential, session,
//! route policy, then the token swap. Takes plain inputs (method, path, query,
//! headers, `now`) and returns what to forward or why not, so the whole flow
//! is unit-tested without sockets. The order follows `design.md`: tenant,
//! credential (header, query, then the session cookie), session (verified by
//! the tenant's source, then checked against revocations), policy.
//! Requests marked `Stream-Auth-Type: service` take the service-account
//! path instead (`service.rs` here: the service's credential, the route
//! table regardless of side, the service's scope, the server token).
//!
//! It is async only because a session source may have to ask Redis or an
//! identity provider; a cached session is answered without awaiting anything.

use std::sync::Arc;

use crate::headers::RequestHeaders;
use arc_swap::ArcSwap;

use crate::credential::{self, Credential};
use crate::policy::{Decision, Policy};
use crate::query::{self, is_key};
use crate::refusal::Refusal;
use crate::revocation::Revocations;
use crate::service::{Presented, ServiceAccount};
use crate::session::Session;
use crate::stream_token::Minted;
use crate::tenant::{Tenant, Tenants};
use crate::websocket;

/// The operation name of `GET /connect` in the route table.
pub const CONNECT_OPERATION: &str = "Connect";
/// The operation name of `GET /longpoll` (v1 and `/api/v2`).
pub const LONGPOLL_OPERATION: &str = "LongPoll";

/// Query parameters the gateway owns: the client's values never go upstream.
const OWNED_PARAMS: [&str; 3] = ["api_key", "authorization", "stream-auth-type"];

/// What to send upstream.
pub struct Forward {
    pub tenant: Arc<Tenant>,
    /// Normalised path plus the rewritten query.
    pub path_and_query: String,
    pub auth: ForwardAuth,
    pub operation: Arc<str>,
    pub template: Arc<str>,
    /// A websocket upgrade of `/connect`.
    pub websocket: bool,
    /// The verified session, for user requests.
    pub session: Option<Arc<Session>>,
}

impl Forward {
    /// The session's user; `None` for anonymous and service requests.
    pub fn user_id(&self) -> Option<&str> {
        match &self.auth {
            ForwardAuth::User { session, .. } => Some(&session.user_id),
            ForwardAuth::Anonymous | ForwardAuth::Service { .. } => None,
        }
    }

    /// The service account, for service requests.
    pub fn service(&self) -> Option<&Arc<ServiceAccount>> {
        match &self.auth {
            ForwardAuth::Service { service, .. } => Some(service),
            _ => None,
        }
    }
}

pub enum ForwardAuth {
    User {
        session: Arc<Session>,
        token: Arc<Minted>,
    },
    Anonymous,
    /// A service account, with the tenant's server-side token.
    Service {
        service: Arc<ServiceAccount>,
        token: Arc<Minted>,
    },
}

/// A refusal, and the service account it was decided for (once a service
/// credential verified), so its audit record and metrics can name it.
#[derive(Debug)]
pub struct Refused {
    pub refusal: Refusal,
    pub service: Option<Arc<ServiceAccount>>,
    /// The verified session of a user request refused after it (a route or
    /// request-shape refusal), for the audit record.
    pub user: Option<Arc<Session>>,
}

impl From<Refusal> for Refused {
    fn from(refusal: Refusal) -> Refused {
        Refused {
            refusal,
            service: None,
            user: None,
        }
    }
}

/// The parts of a request the decision reads after the tenant.
#[derive(Clone, Copy)]
struct Request<'a> {
    method: &'a str,
    path: &'a str,
    pairs: &'a [query::Pair<'a>],
    websocket: bool,
    now: u64,
}

/// What a config reload replaces as one unit: the tenants (keys, sessions,
/// limits, quotas) and the route policy (overrides).
pub struct Routing {
    pub tenants: Tenants,
    pub policy: Policy,
    /// Body cap and server-only fields (`[policy]`).
    pub body: crate::body::BodyPolicy,
}

/// The live [`Routing`], swapped whole by a reload; each request works with
/// the one it loaded first.
pub type SharedRouting = Arc<ArcSwap<Routing>>;

pub struct Exchange {
    pub routing: SharedRouting,
    /// Revoked users and sessions, checked on every request.
    pub revocations: Arc<Revocations>,
}

impl Exchange {
    pub fn new(tenants: Tenants, policy: Policy, revocations: Arc<Revocations>) -> Exchange {
        let body = crate::body::BodyPolicy::new(&policy);
        Exchange {
            routing: Arc::new(ArcSwap::from_pointee(Routing {
                tenants,
                policy,
                body,
            })),
            revocations,
        }
    }

    /// The tenant a raw query's `api_key` names, if any (for the audit
    /// record of a refused request).
    pub fn tenant_of(&self, raw_query: Option<&str>) -> Option<Arc<Tenant>> {
        let pairs = query::parse(raw_query.unwrap_or("")).ok()?;
        let key = pairs.iter().find(|p| is_key(p, "api_key"))?;
        self.routing.load().tenants.by_api_key(&key.value).cloned()
    }

    /// `websocket`: the request asks for a websocket upgrade.
    pub async fn decide(
        &self,
        method: &str,
        path: &str,
        raw_query: Option<&str>,
        headers: &impl RequestHeaders,
        websocket: bool,
        now: u64,
    ) -> Result<Forward, Refusal> {
        self.decide_traced(method, path, raw_query, headers, websocket, now)
            .await
            .map_err(|r| r.refusal)
    }

    /// [`Exchange::decide`], with the service account a refusal was for.
    pub async fn decide_traced(
        &self,
        method: &str,
        path: &str,
        raw_query: Option<&str>,
        headers: &impl RequestHeaders,
        websocket: bool,
        now: u64,
    ) -> Result<Forward, Refused> {
        let routing = self.routing.load_full();
        let pairs = query::parse(raw_query.unwrap_or("")).map_err(Refusal::BadRequest)?;

        let mut api_key: Option<&str> = None;
        for p in pairs.iter().filter(|p| is_key(p, "api_key")) {
            match api_key {
                Some(k) if k != p.value => {
                    return Err(Refusal::BadRequest("more than one api_key").into())
                }
                _ => api_key = Some(&p.value),
            }
        }
        let tenant = api_key
            .and_then(|k| routing.tenants.by_api_key(k))
            .ok_or(Refusal::UnknownApiKey)?;

        let marked = credential::service_marked(headers, &pairs)?;
        let mut credential = credential::extract(headers, &pairs)?;
        // The session cookie is the last resort: an explicit credential (or
        // an explicit anonymous request) wins over what the browser attached.
        // A service request never takes its credential from a cookie.
        if let (false, Credential::Missing, Some(cookie)) = (marked, &credential, &tenant.cookie) {
            if let Some(token) = credential::from_cookie(headers, &cookie.name)? {
                credential::check_cookie_origin(headers, method, &cookie.allowed_origins)?;
                credential = Credential::Token(token);
            }
        }
        let request = Request {
            method,
            path,
            pairs: &pairs,
            websocket,
            now,
        };
        match crate::service::classify(marked, credential).map_err(Refusal::ServiceAuth)? {
            Presented::User(c) => self.decide_user(&routing, tenant, c, request).await,
            Presented::Service(token) => {
                self.decide_service(&routing, tenant, &token, request).await
            }
        }
    }

    /// The user path (a session, or anonymous), from the credential on.
    async fn decide_user(
        &self,
        routing: &Routing,
        tenant: &Arc<Tenant>,
        credential: Credential,
        request: Request<'_>,
    ) -> Result<Forward, Refused> {
        let user = match credential {
            Credential::Token(token) => {
                let source = tenant.session.as_ref().ok_or(Refusal::InvalidSession(
                    "this app accepts anonymous users only",
                ))?;
                let session = source
                    .verify(&token, request.now)
                    .await
                    .map_err(|e| e.refusal())?;
                self.revocations
                    .check(&tenant.id, &session)
                    .map_err(|e| e.refusal())?;
                Some(session)
            }
            Credential::Anonymous if tenant.allow_anonymous => None,
            Credential::Anonymous => return Err(Refusal::AnonymousNotAllowed.into()),
            Credential::Missing => return Err(Refusal::MissingCredential.into()),
        };
        // A refusal keeps the session, so the audit record names the user
        // of a refused route.
        Self::route_user(routing, tenant, user.as_ref(), request).map_err(|refusal| Refused {
            refusal,
            service: None,
            user,
        })
    }

    /// The user path after the session: route policy and request shape.
    fn route_user(
        routing: &Routing,
        tenant: &Arc<Tenant>,
        user: Option<&Arc<Session>>,
        request: Request<'_>,
    ) -> Result<Forward, Refusal> {
        let Request {
            method,
            path,
            pairs,
            websocket,
            now,
        } = request;
        let (path, operation, template) = match routing.policy.decide(method, path) {
            Decision::Forward {
                path,
                operation,
                template,
            } => (path, operation, template),
            Decision::RefuseServerRoute { .. } => return Err(Refusal::ServerRoute),
            Decision::RefuseUnknownRoute => return Err(Refusal::UnknownRoute),
            Decision::BadPath(e) => return Err(Refusal::BadPath(e.to_string())),
        };

        let connect = &*operation == CONNECT_OPERATION;
        if websocket && !connect {
            return Err(Refusal::BadRequest(
                "websocket upgrades are only allowed on /connect",
            ));
        }
        // /connect (and the long-poll fallback, which sends the same payload
        // on its first poll) carries `json`: it is checked (identity binding,
        // no app token inside) and forwarded re-serialised. /connect must
        // have it; later long polls carry only a connection_id.
        let longpoll = &*operation == LONGPOLL_OPERATION;
        let has_json = pairs.iter().any(|p| is_key(p, "json"));
        let connect_json = if connect || (longpoll && has_json) {
            let mut json: Option<&str> = None;
            for p in pairs.iter().filter(|p| is_key(p, "json")) {
                match json {
                    Some(j) if j != p.value => {
                        return Err(Refusal::BadRequest("more than one json parameter"))
                    }
                    _ => json = Some(&p.value),
                }
            }
            let json = json.ok_or(Refusal::BadRequest(
                "the json parameter is required on /connect",
            ))?;
            Some(websocket::check_connect_json(
                json,
                user.map(|s| s.user_id.as_str()),
            )?)
        } else {
            None
        };

        let sent_user_id = pairs.iter().any(|p| is_key(p, "user_id"));
        let drop = |p: &query::Pair<'_>| {
            OWNED_PARAMS.iter().any(|k| is_key(p, k))
                || is_key(p, "user_id")
                || (connect_json.is_some() && is_key(p, "json"))
        };
        let mut append: Vec<(&str, &str)> = Vec::with_capacity(5);
        append.push(("api_key", tenant.api_key.as_str()));
        if let Some(j) = &connect_json {
            append.push(("json", j.as_str()));
        }
        let (auth, path_and_query, session) = match user {
            Some(session) => {
                let token = tenant.minter.token_for_session(session, now).map_err(|e| {
                    tracing::error!(tenant = %tenant.id, error = %e, "minting a Stream token failed");
                    Refusal::Internal
                })?;
                // The SDK sends user_id=<self> on every call; Stream treats it
                // as "act as this user" for server tokens, so it is always
                // overwritten with the session's user, never trusted.
                if sent_user_id {
                    append.push(("user_id", session.user_id.as_str()));
                }
                // Stream reads a websocket's credentials from the query.
                if connect {
                    append.push(("authorization", token.token()));
                    append.push(("stream-auth-type", "jwt"));
                }
                let pq = query::with_query(path, pairs, drop, &append);
                let auth = ForwardAuth::User {
                    session: Arc::clone(session),
                    token,
                };
                (auth, pq, Some(Arc::clone(session)))
            }
            None => {
                if &*operation == crate::policy::UNKNOWN_OPERATION {
                    return Err(Refusal::AnonymousRouteNotAllowed);
                }
                if connect {
                    append.push(("authorization", ""));
                    append.push(("stream-auth-type", "anonymous"));
                }
                let pq = query::with_query(path, pairs, drop, &append);
                (ForwardAuth::Anonymous, pq, None)
            }
        };
        Ok(Forward {
            tenant: Arc::clone(tenant),
            path_and_query,
            auth,
            operation,
            template,
            websocket,
            session,
        })
    }
}

mod service;
#[cfg(test)]
mod tests;
