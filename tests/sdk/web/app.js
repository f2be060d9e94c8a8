// Demo chat page: the official Stream Chat JS SDK pointed at stream-gateway.
//
// Everything comes from the URL fragment (it never reaches the page's server):
//   #gateway=http://127.0.0.1:8080&key=dev-key&user=demo-user&token=<app session>&channel=general
// `token` is the app's own session token (for the demo: the one the fake Stream
// example prints), handed to the SDK through a tokenProvider, never a Stream token.

import { StreamChat } from 'stream-chat';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.hash.slice(1) || location.search.slice(1));
const config = {
  gateway: params.get('gateway') ?? 'http://127.0.0.1:8080',
  key: params.get('key') ?? 'dev-key',
  user: params.get('user') ?? 'demo-user',
  token: params.get('token'),
  channel: params.get('channel') ?? 'general',
};

function setStatus(state, text) {
  $('status').dataset.state = state;
  $('status').textContent = text;
}

function logEvent(text) {
  const li = document.createElement('li');
  li.textContent = text;
  $('events').append(li);
  li.scrollIntoView({ block: 'nearest' });
}

const shown = new Set();
function showMessage(message) {
  if (!message?.id || shown.has(message.id)) return;
  shown.add(message.id);
  const li = document.createElement('li');
  li.className = 'message' + (message.user?.id === config.user ? ' own' : '');
  li.dataset.id = message.id;
  li.dataset.user = message.user?.id ?? '';
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = message.user?.id ?? '?';
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = message.text ?? '';
  li.append(who, text);
  $('messages').append(li);
  li.scrollIntoView({ block: 'nearest' });
}

async function main() {
  if (!config.token) {
    setStatus('error', 'no session token: open this page with #token=<app session token>');
    return;
  }
  setStatus('connecting', `connecting as ${config.user} to ${config.gateway}…`);
  const client = new StreamChat(config.key, { baseURL: config.gateway });
  // The tokenProvider returns the app's session; a real app would fetch a fresh one
  // from its own backend here (the SDK calls it again when the gateway answers 40).
  await client.connectUser({ id: config.user }, async () => config.token);
  // Events from the socket (the SDK also dispatches a few of its own, skipped here).
  const local = new Set(['health.check', 'capabilities.changed', 'channels.queried', 'connection.changed']);
  client.on((event) => {
    if (local.has(event.type)) return;
    const who = event.user?.id ? ` by ${event.user.id}` : '';
    const extra = event.reaction ? ` (${event.reaction.type})` : '';
    logEvent(`${event.type}${who}${extra}`);
  });

  const channel = client.channel('messaging', config.channel);
  await channel.watch();
  $('channel-title').textContent = `#${config.channel}`;
  channel.state.latestMessages.forEach(showMessage);
  channel.on('message.new', (event) => showMessage(event.message));
  setStatus('connected', `${config.user} · ${config.gateway}`);

  const input = $('text');
  input.disabled = false;
  $('send').disabled = false;
  $('composer').addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = '';
    try {
      const { message } = await channel.sendMessage({ text });
      showMessage(message);
    } catch (err) {
      logEvent(`send failed: ${err.message}`);
    }
  });
  window.demoChat = { client, channel };
}

main().catch((err) => {
  console.error(err);
  setStatus('error', `error: ${err.message ?? err}`);
});
