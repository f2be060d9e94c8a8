//! The websocket `/connect` `json` parameter check.
//!
//! Input: the first line is the session's user id (empty: anonymous), the
//! rest is the (already percent-decoded) `json` parameter. Invariants:
//! - never panics; anything over the size cap is refused;
//! - what is forwarded is a JSON object without a top-level `user_token`,
//!   and for a user session its `user_id` is the session's user and
//!   `user_details.id` is absent or the session's user too;
//! - the output passes the check again unchanged (what Stream parses is what
//!   was checked: duplicate keys and odd spellings are gone).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use stream_gateway::websocket::{check_connect_json, MAX_CONNECT_JSON_BYTES};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (user, json) = text.split_once('\n').unwrap_or(("", &text));
    let user = (!user.is_empty()).then_some(user);
    let result = check_connect_json(json, user);
    let Ok(out) = result else {
        return;
    };
    assert!(json.len() <= MAX_CONNECT_JSON_BYTES);
    let v: Value = serde_json::from_str(&out).expect("forwarded json parses");
    let obj = v.as_object().expect("forwarded json is an object");
    assert!(!obj.contains_key("user_token"), "{out}");
    if let Some(user) = user {
        assert_eq!(
            obj.get("user_id").and_then(Value::as_str),
            Some(user),
            "{out}"
        );
        if let Some(details) = obj.get("user_details") {
            match details.get("id") {
                None => {}
                Some(id) => assert_eq!(id.as_str(), Some(user), "{out}"),
            }
        }
    }
    assert_eq!(
        check_connect_json(&out, user).as_ref(),
        Ok(&out),
        "from {json:?}"
    );
});
