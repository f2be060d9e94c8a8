//! Exact counting, coalesced: requests that would run the exact script on
//! the same counters while a call for those counters is already in flight
//! wait for it, then go to Redis together in one call that counts as many of
//! them as fit (`SCRIPT`, with the batch's size). One Redis round trip per
//! batch instead of one per request, and the same outcome as running the
//! requests one after another: the first `grant` of the batch pass and are
//! counted, the others are refused on the counter that filled up, and no
//! counter ever goes over its limit.
//!
//! Up to [`IN_FLIGHT`] calls per set of counters are in flight at once; a
//! request that finds them all out waits for the first to end and then for
//! its own batch's call, each bounded by `redis.timeout`. The first waiter
//! leads the next batch; a leader dropped at any point (its request
//! cancelled) fails its batch with an error (then `on_redis_error` applies)
//! and hands the lead on.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::redis_conn::Redis;

/// KEYS[i] is a counter, ARGV[2i-1] its limit (0: none) and ARGV[2i] its
/// TTL; the last ARGV is how many requests want counting. Returns {grant,
/// full}: grant requests counted in every counter (the most that fit), and
/// when fewer than wanted, the 1-based index of the counter that filled up
/// first (the lowest such index on a tie), as one-by-one counting would.
///
/// Counts first and takes back what does not fit (a script runs alone, so
/// no one sees the difference): one Redis command per counter when all fit,
/// instead of GET, INCRBY and EXPIRE (time in Redis per call with two
/// counters: 6.5 → 3.7 µs, benches/README.md). The TTL is set when the
/// increment made the counter (new, or taken back to 0): a counter's key
/// names its window, so its TTL need not move later.
pub(super) const SCRIPT: &str = r#"
local want = tonumber(ARGV[#ARGV])
local grant, full = want, 0
for i = 1, #KEYS do
  local n = redis.call('INCRBY', KEYS[i], want)
  if n == want then redis.call('EXPIRE', KEYS[i], ARGV[2 * i]) end
  local limit = tonumber(ARGV[2 * i - 1])
  if limit > 0 then
    local room = limit - (n - want)
    if room < grant then
      if room < 0 then room = 0 end
      grant = room
      full = i
    end
  end
end
if grant < want then
  for i = 1, #KEYS do
    redis.call('DECRBY', KEYS[i], want - grant)
  end
end
return {grant, full}
"#;

/// One exact count: the counters and, per counter, its limit and TTL.
/// Inline (at most four counters), with shared key strings: a tenant's keys
/// are made once per window, not per request (`quota::TenantKeys`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub(super) struct Counters {
    pub keys: smallvec::SmallVec<[Arc<str>; 4]>,
    pub args: smallvec::SmallVec<[u64; 8]>,
}

/// What a request gets: 0 (counted) or the full counter's index, as the
/// one-request script answered; or why Redis did not answer.
type Outcome = Result<i64, String>;

enum Turn {
    Done(Outcome),
    /// The call in flight is over: lead the next batch. The lead travels as
    /// a value, so a waiter that is gone before it takes it still hands it
    /// on (the value's drop does).
    Lead(Lead),
}

/// Calls in flight at once per set of counters: a second one overlaps the
/// first's round trip, so the gateway is not idle while a batch is out.
const IN_FLIGHT: usize = 2;

/// Per set of counters with a call in flight: how many, and the requests
/// waiting for the next batch. An entry exists while a call for its
/// counters is in flight.
#[derive(Default)]
struct Queue {
    in_flight: usize,
    waiting: VecDeque<oneshot::Sender<Turn>>,
}

type Waiting = Arc<Mutex<HashMap<Counters, Queue, ahash::RandomState>>>;

fn lock(waiting: &Waiting) -> MutexGuard<'_, HashMap<Counters, Queue, ahash::RandomState>> {
    // A poisoned lock only means a panic elsewhere; the map stays valid.
    waiting.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
pub(super) struct Batches {
    waiting: Waiting,
}

impl Batches {
    /// Counts one request on `counters`, in a batch with the requests that
    /// queue up for the same counters meanwhile.
    pub(super) async fn count(
        &self,
        redis: &Redis,
        script: &redis::Script,
        counters: Counters,
    ) -> Outcome {
        let lead = {
            let mut map = lock(&self.waiting);
            match map.get_mut(&counters) {
                Some(queue) if queue.in_flight >= IN_FLIGHT => {
                    let (tx, rx) = oneshot::channel();
                    queue.waiting.push_back(tx);
                    Err(rx)
                }
                Some(queue) => {
                    queue.in_flight += 1;
                    Ok(())
                }
                None => {
                    let queue = Queue {
                        in_flight: 1,
                        waiting: VecDeque::new(),
                    };
                    map.insert(counters.clone(), queue);
                    Ok(())
                }
            }
        };
        let mut lead = match lead {
            Ok(()) => Lead::new(&self.waiting, counters),
            Err(rx) => match rx.await {
                Ok(Turn::Done(outcome)) => return outcome,
                Ok(Turn::Lead(lead)) => lead,
                Err(_) => return Err("quota batch lost its leader".into()),
            },
        };
        // Let the requests already under way reach this point first, so
        // they join this batch rather than wait for the next one.
        tokio::task::yield_now().await;
        lead.followers = lock(&self.waiting)
            .get_mut(&lead.counters)
            .map(|q| std::mem::take(&mut q.waiting))
            .unwrap_or_default();
        let want = lead.followers.len() as u64 + 1;
        let mut inv = script.prepare_invoke();
        for key in &lead.counters.keys {
            inv.key(&**key);
        }
        for arg in &lead.counters.args {
            inv.arg(*arg);
        }
        inv.arg(want);
        let answer: Result<(i64, i64), String> = redis
            .call(|mut conn| async move { inv.invoke_async(&mut conn).await })
            .await;
        // Slot 0 is the leader, then the followers in arrival order.
        let outcome = |slot: i64| match &answer {
            Ok((grant, _)) if slot < *grant => Ok(0),
            Ok((_, full)) => Ok((*full).max(1)),
            Err(why) => Err(why.clone()),
        };
        for (slot, tx) in std::mem::take(&mut lead.followers).into_iter().enumerate() {
            let _ = tx.send(Turn::Done(outcome(slot as i64 + 1)));
        }
        outcome(0)
    }
}

/// The lead of a batch, held from the moment a request gets it: on drop
/// (the call done, or the request cancelled at any point), answers the
/// followers it has not answered (an error) and hands the lead to the first
/// waiter, or gives up its place in flight.
struct Lead {
    waiting: Waiting,
    counters: Counters,
    followers: VecDeque<oneshot::Sender<Turn>>,
    /// False once handed on (or never taken), so its drop does nothing.
    armed: bool,
}

impl Lead {
    fn new(waiting: &Waiting, counters: Counters) -> Lead {
        Lead {
            waiting: Arc::clone(waiting),
            counters,
            followers: VecDeque::new(),
            armed: true,
        }
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        for tx in self.followers.drain(..) {
            let _ = tx.send(Turn::Done(Err("quota batch cancelled".into())));
        }
        if !self.armed {
            return;
        }
        let mut map = lock(&self.waiting);
        let Some(queue) = map.get_mut(&self.counters) else {
            return;
        };
        // A waiter whose request is gone cannot lead: the next one does.
        while let Some(tx) = queue.waiting.pop_front() {
            let next = Lead::new(&self.waiting, self.counters.clone());
            match tx.send(Turn::Lead(next)) {
                Ok(()) => return,
                // Dropped here, under the lock: disarmed first.
                Err(Turn::Lead(mut next)) => next.armed = false,
                Err(Turn::Done(_)) => {}
            }
        }
        queue.in_flight -= 1;
        if queue.in_flight == 0 {
            map.remove(&self.counters);
        }
    }
}
