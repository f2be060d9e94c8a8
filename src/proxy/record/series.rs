//! The metric series a finished request is counted in, found once per kind
//! of request and thread.

use std::sync::Arc;

use crate::metrics;
use crate::tenant::Tenant;

/// What a finished request is counted under.
pub(super) struct Labels<'a> {
    pub(super) tenant: &'a Option<Arc<Tenant>>,
    pub(super) operation: &'a Option<Arc<str>>,
    pub(super) decision: &'static str,
    pub(super) status: u16,
}

/// The metric series of one kind of request: `requests_total`, the request
/// and the upstream durations.
pub(super) struct Handles {
    tenant: Option<Arc<Tenant>>,
    operation: Option<Arc<str>>,
    decision: &'static str,
    status: u16,
    pub(super) requests: prometheus::IntCounter,
    pub(super) duration: prometheus::Histogram,
    pub(super) upstream: prometheus::Histogram,
}

thread_local! {
    /// The series of the last request this thread counted: under load most
    /// requests are of the same kind, and finding a series by its label
    /// values (hashing them, a lock) cost ~600 instructions a request
    /// (callgrind). Held by the same `Arc`s as the request's tenant and
    /// operation, so a pointer compare cannot be fooled by a reused address.
    static LAST: std::cell::RefCell<Option<Handles>> = const { std::cell::RefCell::new(None) };
}

impl Labels<'_> {
    fn same_as(&self, h: &Handles) -> bool {
        let same_arc = |a: &Option<Arc<Tenant>>, b: &Option<Arc<Tenant>>| match (a, b) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        let same_op = match (self.operation, &h.operation) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        same_arc(self.tenant, &h.tenant)
            && same_op
            && self.decision == h.decision
            && self.status == h.status
    }

    fn handles(&self) -> Handles {
        let m = metrics::get();
        let tenant_id = self.tenant.as_ref().map_or("-", |t| t.id.as_str());
        let mut digits = itoa::Buffer::new();
        let status = digits.format(self.status);
        let operation = self.operation.as_deref().unwrap_or("-");
        Handles {
            tenant: self.tenant.clone(),
            operation: self.operation.clone(),
            decision: self.decision,
            status: self.status,
            requests: m
                .requests
                .with_label_values(&[tenant_id, operation, self.decision, status]),
            duration: m
                .request_duration
                .with_label_values(&[tenant_id, self.decision]),
            upstream: m.upstream_duration.with_label_values(&[tenant_id]),
        }
    }

    /// Runs `f` with this kind of request's series.
    pub(super) fn with_handles(&self, f: impl FnOnce(&Handles)) {
        LAST.with(|last| {
            let Ok(mut last) = last.try_borrow_mut() else {
                return f(&self.handles());
            };
            match last.as_ref() {
                Some(h) if self.same_as(h) => {}
                _ => *last = Some(self.handles()),
            }
            if let Some(h) = last.as_ref() {
                f(h);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{Labels, LAST};
    use std::sync::Arc;

    fn count(operation: &Option<Arc<str>>, decision: &'static str, status: u16) {
        let labels = Labels {
            tenant: &None,
            operation,
            decision,
            status,
        };
        labels.with_handles(|h| h.requests.inc());
    }

    fn counted(operation: &str, decision: &str, status: &str) -> u64 {
        crate::metrics::get()
            .requests
            .with_label_values(&["-", operation, decision, status])
            .get()
    }

    #[test]
    fn each_kind_of_request_is_counted_in_its_own_series_through_the_cache() {
        // Names of this test's own, so other tests' counts do not mix in.
        let a: Option<Arc<str>> = Some("RecordTestOpA".into());
        let b: Option<Arc<str>> = Some("RecordTestOpB".into());
        // Same name, another Arc: still its series (looked up again).
        let a2: Option<Arc<str>> = Some("RecordTestOpA".into());
        count(&a, "forwarded", 200);
        count(&a, "forwarded", 200);
        count(&a, "forwarded", 201);
        count(&b, "forwarded", 200);
        count(&a, "rate_limited", 200);
        count(&a2, "forwarded", 200);
        count(&None, "forwarded", 200);
        assert_eq!(counted("RecordTestOpA", "forwarded", "200"), 3);
        assert_eq!(counted("RecordTestOpA", "forwarded", "201"), 1);
        assert_eq!(counted("RecordTestOpB", "forwarded", "200"), 1);
        assert_eq!(counted("RecordTestOpA", "rate_limited", "200"), 1);
        // The cache holds the last kind, by its own Arc.
        LAST.with(|l| {
            let l = l.borrow();
            let h = l.as_ref().unwrap();
            assert!(h.operation.is_none() && h.tenant.is_none());
            assert_eq!((h.decision, h.status), ("forwarded", 200));
        });
    }
}
