// The official Stream Chat JS SDK (`stream-chat`, Node build) against stream-gateway.
// Run by tests/sdk_node.rs, which starts the fake Stream and the gateway first.
//
// Input (environment):
//   GATEWAY_URL          http://127.0.0.1:PORT (the SDK's baseURL)
//   STREAM_API_KEY       the tenant's api_key
//   CHANNEL              channel id (type "messaging")
//   ALICE_TOKEN, BOB_TOKEN   app session tokens (not Stream tokens)
//   CAROL_TOKEN_SHORT    carol's first session token, expiring a few seconds after start
//   CAROL_TOKEN_FRESH    what carol's tokenProvider returns on later calls
//   SEND_BURST           how many SendMessage calls per user the gateway allows at once
//
// Output: one JSON line on stdout, the last line: {"ok": true, ...facts} and exit 0,
// or {"ok": false, "step", "error"} and exit 1 (2 on the overall timeout).
// Only the SDK's public API is used.

import { StreamChat } from 'stream-chat';

const env = (name) => {
  const v = process.env[name];
  if (!v) fail('input', `missing environment variable ${name}`);
  return v;
};

let step = 'start';
const result = { ok: false };

function fail(where, error) {
  console.log(JSON.stringify({ ok: false, step: where, error: String(error), partial: result }));
  process.exit(1);
}

const overall = setTimeout(() => {
  console.log(JSON.stringify({ ok: false, step, error: 'scenario timed out after 90 s', partial: result }));
  process.exit(2);
}, 90_000);

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

/** Resolves with the first event of `type` on `client` matching `pred`, or rejects after `ms`. */
function nextEvent(client, type, pred, ms = 10_000) {
  return new Promise((resolve, reject) => {
    let sub;
    const timer = setTimeout(() => {
      sub?.unsubscribe();
      reject(new Error(`no ${type} event within ${ms} ms`));
    }, ms);
    sub = client.on(type, (event) => {
      if (pred(event)) {
        clearTimeout(timer);
        sub.unsubscribe();
        resolve(event);
      }
    });
  });
}

/** Whether an event of `type` matching `pred` arrives within `ms`. */
async function eventArrives(client, type, pred, ms) {
  try {
    await nextEvent(client, type, pred, ms);
    return true;
  } catch {
    return false;
  }
}

/** The `exp` claim of a JWT (seconds), read without verifying it. */
function expOf(token) {
  const payload = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
  return JSON.parse(Buffer.from(payload, 'base64').toString('utf8')).exp;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** What the SDK surfaced for a refused call. */
function errorFacts(e) {
  return { status: e?.status ?? null, code: e?.code ?? null, message: String(e?.message ?? e) };
}

async function main() {
  const baseURL = env('GATEWAY_URL');
  const key = env('STREAM_API_KEY');
  const channelId = env('CHANNEL');
  const burst = Number(env('SEND_BURST'));
  const tokens = {
    alice: env('ALICE_TOKEN'),
    bob: env('BOB_TOKEN'),
    carolShort: env('CAROL_TOKEN_SHORT'),
    carolFresh: env('CAROL_TOKEN_FRESH'),
  };
  const options = { baseURL, allowServerSideConnect: true, timeout: 10_000 };
  const alice = new StreamChat(key, options);
  const bob = new StreamChat(key, options);
  const carol = new StreamChat(key, options);
  result.user_agent = alice.getUserAgent();

  const providerCalls = { alice: 0, bob: 0, carol: 0 };
  const provider = (who, pick) => async () => {
    providerCalls[who] += 1;
    return pick(providerCalls[who]);
  };

  step = 'connectUser';
  const [hcA, hcB, hcC] = await Promise.all([
    alice.connectUser({ id: 'alice', name: 'Alice' }, provider('alice', () => tokens.alice)),
    bob.connectUser({ id: 'bob', name: 'Bob' }, provider('bob', () => tokens.bob)),
    carol.connectUser(
      { id: 'carol' },
      provider('carol', (n) => (n === 1 ? tokens.carolShort : tokens.carolFresh)),
    ),
  ]);
  check(hcA?.me?.id === 'alice' && hcB?.me?.id === 'bob', 'health.check me ids');
  check(typeof hcA.connection_id === 'string' && hcA.connection_id.length > 0, 'connection_id');
  check(providerCalls.carol === 1, `carol connected with her first (short) token; provider calls ${providerCalls.carol}`);
  result.connected = {
    alice: alice.wsConnection?.connectionID ?? null,
    bob: bob.wsConnection?.connectionID ?? null,
    carol: carol.wsConnection?.connectionID ?? null,
  };

  step = 'watch';
  const chA = alice.channel('messaging', channelId);
  const chB = bob.channel('messaging', channelId);
  const chC = carol.channel('messaging', channelId);
  await chA.watch();
  await chB.watch();
  await chC.watch();
  const members = Object.keys(chB.state.members).sort();
  check(members.includes('alice') && members.includes('bob'), `members ${members}`);
  result.watch = { cid: chB.cid, members, watcher_count: chC.state.watcher_count };

  step = 'sendMessage';
  const text = `hello bob, from alice via the gateway (${Date.now()})`;
  const bobGetsIt = nextEvent(bob, 'message.new', (e) => e.message?.text === text);
  const sent = await chA.sendMessage({ text });
  check(sent?.message?.text === text && sent.message.user?.id === 'alice', 'sendMessage response');
  const msgId = sent.message.id;
  result.message = { id: msgId, text, user: sent.message.user.id };

  step = 'message.new at bob';
  const got = await bobGetsIt;
  check(got.message.id === msgId && got.user?.id === 'alice' && got.cid === chB.cid, 'message.new fields');
  const inBobState = chB.state.latestMessages.some((m) => m.id === msgId);
  check(inBobState, "the message is in bob's channel state");
  result.bob_received = {
    id: got.message.id,
    user: got.user.id,
    cid: got.cid,
    in_state: inBobState,
    unread_count: chB.countUnread(),
  };

  step = 'sendReaction';
  const aliceSeesReaction = nextEvent(
    alice,
    'reaction.new',
    (e) => e.reaction?.type === 'love' && e.user?.id === 'bob',
  );
  const reacted = await chB.sendReaction(msgId, { type: 'love' });
  check(reacted?.reaction?.type === 'love' && reacted.reaction.user_id === 'bob', 'sendReaction response');
  const reactionEvent = await aliceSeesReaction;
  const inAlice = chA.state.latestMessages.find((m) => m.id === msgId);
  result.reaction = {
    type: reacted.reaction.type,
    user: reacted.reaction.user_id,
    own_reactions: (reacted.message?.own_reactions ?? []).map((r) => r.type),
    event_message_id: reactionEvent.message?.id,
    alice_state_counts: inAlice?.reaction_counts ?? null,
  };
  check(result.reaction.alice_state_counts?.love === 1, "alice's state counts bob's reaction");

  step = 'markRead';
  const aliceSeesRead = nextEvent(alice, 'message.read', (e) => e.user?.id === 'bob');
  const readResp = await chB.markRead();
  check(readResp?.event?.type === 'message.read', 'markRead response');
  await aliceSeesRead;
  const bobRead = chA.state.read.bob;
  result.read = {
    event: readResp.event.type,
    alice_sees_last_read_message_id: bobRead?.last_read_message_id ?? null,
    bob_unread_after: chB.countUnread(),
  };
  check(bobRead?.last_read_message_id === msgId, "alice's state has bob's read mark");

  step = 'server-only calls';
  result.server_only = {};
  for (const [name, call] of [
    ['updateAppSettings', () => alice.updateAppSettings({ disable_auth_checks: true })],
    ['createChannelType', () => alice.createChannelType({ name: 'sneaky' })],
  ]) {
    try {
      await call();
      result.server_only[name] = { refused: false };
    } catch (e) {
      result.server_only[name] = { refused: true, ...errorFacts(e) };
    }
  }

  step = 'rate limit';
  let accepted = 1; // the message above
  let limited = null;
  for (let i = 0; i < burst + 2 && !limited; i++) {
    try {
      await chA.sendMessage({ text: `burst ${i}` });
      accepted += 1;
    } catch (e) {
      limited = errorFacts(e);
    }
  }
  result.rate_limit = { accepted, burst, ...(limited ?? { status: null, code: null }) };

  step = 'token refresh';
  // Wait until carol's first session has expired, then make a REST call: the gateway
  // answers code 40, the SDK calls the tokenProvider again and retries.
  const waitMs = (expOf(tokens.carolShort) + 1) * 1000 - Date.now() + 500;
  if (waitMs > 0) await sleep(waitMs);
  const carolText = `carol after her session expired (${Date.now()})`;
  const bobGetsCarol = nextEvent(bob, 'message.new', (e) => e.message?.text === carolText);
  const carolSent = await chC.sendMessage({ text: carolText });
  await bobGetsCarol;
  result.token_refresh = {
    provider_calls: providerCalls.carol,
    message_id: carolSent?.message?.id ?? null,
    message_user: carolSent?.message?.user?.id ?? null,
  };
  check(providerCalls.carol >= 2, `carol's tokenProvider called again (calls: ${providerCalls.carol})`);
  // Carol's socket: the gateway closed it (code 40, then close 1001) when her session
  // expired. The SDK must reconnect (with a fresh token from the provider) and get
  // events again; its reconnect back-off is random, so keep trying for up to 30 s.
  let carolGotEvents = false;
  const deadline = Date.now() + 30000;
  // Bob reacts (reactions are not under the SendMessage limit), a new type each try.
  for (let i = 0; !carolGotEvents && Date.now() < deadline; i++) {
    const type = `wave${i}`;
    const carolGetsBob = eventArrives(carol, 'reaction.new', (e) => e.reaction?.type === type, 2000);
    await chB.sendReaction(carolSent.message.id, { type });
    carolGotEvents = await carolGetsBob;
  }
  result.token_refresh.carol_socket_events_after_expiry = carolGotEvents;
  result.token_refresh.carol_socket_healthy_flag = carol.wsConnection?.isHealthy ?? null;

  step = 'disconnect';
  await Promise.all([alice.disconnectUser(), bob.disconnectUser(), carol.disconnectUser()]);
  result.provider_calls = providerCalls;
  result.ok = true;
}

main().then(
  () => {
    clearTimeout(overall);
    console.log(JSON.stringify(result));
    process.exit(0);
  },
  (e) => fail(step, e?.stack ?? e),
);
