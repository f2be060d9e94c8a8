//! The Redis side of the fleet-wide caps: key names, the three Lua
//! scripts, and the grouping of sockets into script calls (one tenant, one
//! hash slot, at most [`MAX_BATCH`] members per call).

use std::collections::HashMap;

/// Most members sent in one heartbeat or release script call.
pub(super) const MAX_BATCH: usize = 500;

/// KEYS: the sets the socket counts in; ARGV[1]: the member; ARGV[2]: the
/// lease (ms); ARGV[2 + i]: the cap of KEYS[i]. Returns 0 (added to every
/// set) or the index of the first full set (added to none).
pub(super) const ACQUIRE: &str = r#"
local t = redis.call('TIME')
local now = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
for i = 1, #KEYS do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  if redis.call('ZCARD', KEYS[i]) >= tonumber(ARGV[2 + i]) then return i end
end
local expiry = string.format('%.0f', tonumber(now) + tonumber(ARGV[2]))
for i = 1, #KEYS do
  redis.call('ZADD', KEYS[i], expiry, ARGV[1])
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return 0
"#;

/// ARGV[1]: the lease (ms); then, for each KEYS[i], a count n and n
/// members. (Re-)adds every member with a new lease, drops expired ones.
pub(super) const REFRESH: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = string.format('%.0f', now + tonumber(ARGV[1]))
local a = 2
for i = 1, #KEYS do
  local n = tonumber(ARGV[a])
  local args = {}
  for j = 1, n do
    args[2 * j - 1] = expiry
    args[2 * j] = ARGV[a + j]
  end
  a = a + n + 1
  if n > 0 then redis.call('ZADD', KEYS[i], unpack(args)) end
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', string.format('%.0f', now))
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
end
return 0
"#;

/// For each KEYS[i], ARGV holds a count n and n members to remove.
pub(super) const REMOVE: &str = r#"
local a = 1
for i = 1, #KEYS do
  local n = tonumber(ARGV[a])
  if n > 0 then redis.call('ZREM', KEYS[i], unpack(ARGV, a + 1, a + n)) end
  a = a + n + 1
end
return 0
"#;

/// The sets one socket counts in (all of one tenant, one hash slot).
#[derive(Debug)]
pub(super) struct Keys {
    pub(super) tenant: String,
    pub(super) sets: Vec<String>,
}

/// The per-user set of a tenant. User ids are Stream-safe (letters,
/// digits, `@ _ -`): no key injection.
pub fn user_key(tenant: &str, user: &str) -> String {
    format!("sg:ws:{{{tenant}}}:u:{user}")
}

/// The tenant-wide set.
pub fn tenant_key(tenant: &str) -> String {
    format!("sg:ws:{{{tenant}}}:all")
}

/// One script call's worth of (set key, members), all keys of one tenant.
pub(super) type Batch = Vec<(String, Vec<String>)>;

/// Groups sockets by tenant (one hash slot per call) and set, at most
/// [`MAX_BATCH`] members per call.
pub(super) fn batches<'a>(
    instance: &str,
    sockets: impl Iterator<Item = (u64, &'a Keys)>,
) -> Vec<Batch> {
    let mut by_tenant: HashMap<&str, HashMap<&str, Vec<String>>> = HashMap::new();
    for (id, keys) in sockets {
        let sets = by_tenant.entry(keys.tenant.as_str()).or_default();
        for s in &keys.sets {
            sets.entry(s.as_str())
                .or_default()
                .push(format!("{instance}:{id}"));
        }
    }
    let mut out = Vec::new();
    for sets in by_tenant.into_values() {
        let mut batch: Batch = Vec::new();
        let mut n = 0;
        for (key, members) in sets {
            for chunk in members.chunks(MAX_BATCH) {
                if n + chunk.len() > MAX_BATCH && !batch.is_empty() {
                    out.push(std::mem::take(&mut batch));
                    n = 0;
                }
                batch.push((key.to_string(), chunk.to_vec()));
                n += chunk.len();
            }
        }
        if !batch.is_empty() {
            out.push(batch);
        }
    }
    out
}

/// 16 hex digits, different for every process (the std hasher's keys are
/// random per process; the pid and the time make a collision even less
/// likely).
pub(super) fn instance_id() -> String {
    use std::hash::BuildHasher;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let h = std::collections::hash_map::RandomState::new().hash_one((std::process::id(), nanos));
    format!("{h:016x}")
}
#[cfg(test)]
mod tests {
    use super::*;

    fn keys(tenant: &str, sets: &[&str]) -> Keys {
        Keys {
            tenant: tenant.into(),
            sets: sets.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn keys_carry_the_tenant_hash_tag() {
        assert_eq!(user_key("acme", "alice"), "sg:ws:{acme}:u:alice");
        assert_eq!(tenant_key("acme"), "sg:ws:{acme}:all");
    }

    #[test]
    fn batches_keep_one_tenant_per_call_and_bound_their_size() {
        let a = keys("a", &["sg:ws:{a}:u:x", "sg:ws:{a}:all"]);
        let b = keys("b", &["sg:ws:{b}:u:y"]);
        let mut sockets: Vec<(u64, &Keys)> = vec![(1, &a), (2, &b)];
        let many: Vec<Keys> = (0..1200).map(|_| keys("a", &["sg:ws:{a}:all"])).collect();
        sockets.extend(many.iter().enumerate().map(|(i, k)| (100 + i as u64, k)));
        let out = batches("inst", sockets.into_iter());
        let mut members = 0;
        for b in &out {
            let tags: std::collections::HashSet<&str> = b
                .iter()
                .map(|(k, _)| k.split(['{', '}']).nth(1).unwrap())
                .collect();
            assert_eq!(tags.len(), 1, "one hash slot per call: {tags:?}");
            let n: usize = b.iter().map(|(_, m)| m.len()).sum();
            assert!(n <= MAX_BATCH && n > 0);
            members += n;
        }
        assert_eq!(members, 2 + 1 + 1200);
        assert!(out
            .iter()
            .flatten()
            .any(|(k, m)| k == "sg:ws:{a}:u:x" && m == &["inst:1".to_string()]));
    }

    #[test]
    fn instance_ids_differ() {
        assert_ne!(instance_id(), instance_id());
        assert_eq!(instance_id().len(), 16);
    }
}
