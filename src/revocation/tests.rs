use super::*;

fn session(user: &str, iat: Option<u64>, id: &str, exp: u64) -> Arc<Session> {
    Arc::new(Session {
        user_id: user.into(),
        expires_at: exp,
        issued_at: iat,
        id: id.into(),
        stream_token: Default::default(),
    })
}

fn revocations() -> Revocations {
    let r = Revocations::new();
    let mut t = TenantRevocations::default();
    t.users.insert("bob".into(), 1_000);
    t.sessions.insert("jti:stolen".into());
    r.replace(HashMap::from([("acme".to_string(), t)]));
    r
}

#[test]
fn user_revocations_cut_sessions_issued_before() {
    let r = revocations();
    let check = |s: Arc<Session>| r.check("acme", &s);
    assert_eq!(
        check(session("bob", Some(999), "a", 9)),
        Err(SessionError::Revoked)
    );
    assert_eq!(
        check(session("bob", Some(1_000), "a", 9)),
        Err(SessionError::Revoked)
    );
    assert_eq!(
        check(session("bob", None, "a", 9)),
        Err(SessionError::Revoked)
    );
    assert_eq!(check(session("bob", Some(1_001), "a", 9)), Ok(()));
    assert_eq!(
        check(session("alice", Some(1), "jti:stolen", 9)),
        Err(SessionError::Revoked)
    );
    assert_eq!(check(session("alice", Some(1), "jti:other", 9)), Ok(()));
    // Other tenants are not affected.
    assert_eq!(
        r.check("other", &session("bob", Some(1), "jti:stolen", 9)),
        Ok(())
    );
}

#[test]
fn sweep_fires_revoked_and_expired_sockets_once() {
    let reg = SocketRegistry::new();
    let r = revocations();
    let bob = reg.register("acme", Some(session("bob", Some(5), "a", 10_000)), true);
    let alice = reg.register("acme", Some(session("alice", Some(5), "b", 100)), true);
    let keep = reg.register("acme", Some(session("carol", Some(5), "c", 100)), false);
    let anon = reg.register("acme", None, true);
    assert_eq!(reg.sweep(&r, 50), 1);
    assert_eq!(bob.kill.reason(), Some(CloseReason::Revoked));
    assert!(!alice.kill.is_fired());
    assert_eq!(reg.sweep(&r, 101), 1);
    assert_eq!(alice.kill.reason(), Some(CloseReason::Expired));
    assert!(!keep.kill.is_fired(), "close_on_expiry = false keeps it");
    assert!(!anon.kill.is_fired());
    assert_eq!(reg.len(), 4);
    drop((bob, alice));
    assert_eq!(reg.len(), 2);
    assert_eq!(reg.close_all(CloseReason::Shutdown), 2);
    assert_eq!(anon.kill.reason(), Some(CloseReason::Shutdown));
}
