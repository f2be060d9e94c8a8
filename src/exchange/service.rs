//! The service-account path of the decision: the service's credential (a
//! `sgs_` token looked up by its hash, or a JWT of the tenant's session
//! verifier carrying a service's claim), the route table regardless of side,
//! no websockets, the account's scope, then the tenant's server token.
//!
//! Unlike users, a service's `user_id` query parameter and request body are
//! forwarded as sent: server-side calls name the user they act for.

use std::sync::Arc;

use super::{Exchange, Forward, ForwardAuth, Refused, Request, Routing, OWNED_PARAMS};
use super::{CONNECT_OPERATION, LONGPOLL_OPERATION};
use crate::policy::Decision;
use crate::query::{self, is_key};
use crate::refusal::Refusal;
use crate::service::{ServiceAccount, ServiceAuthError, TOKEN_PREFIX};
use crate::tenant::Tenant;

impl Exchange {
    pub(super) async fn decide_service(
        &self,
        routing: &Routing,
        tenant: &Arc<Tenant>,
        token: &str,
        request: Request<'_>,
    ) -> Result<Forward, Refused> {
        let account = authenticate(tenant, token, request.now).await?;
        let refused = |refusal: Refusal| Refused {
            refusal,
            service: Some(Arc::clone(&account)),
            user: None,
        };
        let (path, operation, template) =
            match routing.policy.decide_service(request.method, request.path) {
                Decision::Forward {
                    path,
                    operation,
                    template,
                } => (path, operation, template),
                Decision::RefuseUnknownRoute => return Err(refused(Refusal::UnknownRoute)),
                Decision::BadPath(e) => return Err(refused(Refusal::BadPath(e.to_string()))),
                // decide_service never refuses for the side; fail closed.
                Decision::RefuseServerRoute { .. } => return Err(refused(Refusal::OutOfScope)),
            };
        // A server token has no user to connect as: never a socket, whatever
        // the scope says (config validation keeps these out of scopes too).
        if &*operation == CONNECT_OPERATION || &*operation == LONGPOLL_OPERATION {
            return Err(refused(Refusal::ServiceWebsocket));
        }
        if request.websocket {
            return Err(refused(Refusal::BadRequest(
                "websocket upgrades are only allowed on /connect",
            )));
        }
        if !account.scope.allows(request.method, &template, &operation) {
            return Err(refused(Refusal::OutOfScope));
        }
        let token = tenant.minter.server_token(request.now).map_err(|e| {
            tracing::error!(tenant = %tenant.id, error = %e, "minting a Stream server token failed");
            refused(Refusal::Internal)
        })?;
        let q = query::rebuild(
            request.pairs,
            |p| OWNED_PARAMS.iter().any(|k| is_key(p, k)),
            &[("api_key", tenant.api_key.as_str())],
        );
        Ok(Forward {
            tenant: Arc::clone(tenant),
            path_and_query: format!("{path}?{q}"),
            auth: ForwardAuth::Service {
                service: account,
                token,
            },
            operation,
            template,
            websocket: false,
            session: None,
        })
    }
}

/// The tenant's service account `token` proves, or why not.
async fn authenticate(
    tenant: &Tenant,
    token: &str,
    now: u64,
) -> Result<Arc<ServiceAccount>, Refusal> {
    let unknown = Refusal::ServiceAuth(ServiceAuthError::Unknown);
    if token.starts_with(TOKEN_PREFIX) {
        return tenant.services.by_token(token).cloned().ok_or(unknown);
    }
    // Only a tenant with JWT service accounts verifies anything else (a
    // user's session presented as a service ends here or at the claim).
    let source = match &tenant.session {
        Some(source) if tenant.services.has_jwt() && token.split('.').count() == 3 => source,
        _ => return Err(unknown),
    };
    let verified = source
        .verify_service(token, now)
        .await
        .map_err(|e| e.refusal())?;
    tenant
        .services
        .by_name(&verified.service)
        .cloned()
        .ok_or(unknown)
}

#[cfg(test)]
mod tests;
