// Two users in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core; no browser download) on the demo page (tests/sdk/web), both
// connected through stream-gateway: alice sends a message, bob's page shows it.
// Run by tests/sdk_browser.rs, which starts the fake Stream, the gateway and the
// page's static server (tests/sdk/serve.mjs, another origin than the gateway).
//
// Input (environment):
//   PAGE_URL         http://127.0.0.1:PORT/web/ (the static server)
//   GATEWAY_URL      the gateway (the SDK's baseURL)
//   STREAM_API_KEY, CHANNEL, ALICE_TOKEN, BOB_TOKEN (app session tokens)
//   SCREENSHOT       where to save bob's page as PNG
//   USER_DATA_DIR    a fresh, empty Chromium profile directory
//   CHROMIUM         optional, default /usr/bin/chromium
//
// Output: one JSON line on stdout, the last line: {"ok": true, ...} and exit 0, or
// {"ok": false, "step", "error", ...} and exit 1.

import { chromium } from 'playwright-core';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`missing environment variable ${name}`);
  return v;
};

const FLAGS = [
  '--headless',
  '--no-sandbox', // as root, Chromium's sandbox cannot start
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  // Without these Chromium tries to reach Google's services at start.
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let step = 'start';
const result = { ok: false, console: [], page_errors: [], failed_requests: [], error_responses: [] };

function watchPage(page, who) {
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') result.console.push(`${who} ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => result.page_errors.push(`${who}: ${e.message}`));
  page.on('response', (r) => {
    if (r.status() >= 400) result.error_responses.push(`${who}: ${r.status()} ${r.request().method()} ${r.url()}`);
  });
  page.on('requestfailed', (r) => result.failed_requests.push(`${who}: ${r.method()} ${r.url()} ${r.failure()?.errorText}`));
}

async function main() {
  const pageUrl = env('PAGE_URL');
  const fragment = (user, token) =>
    '#' +
    new URLSearchParams({
      gateway: env('GATEWAY_URL'),
      key: env('STREAM_API_KEY'),
      user,
      token,
      channel: env('CHANNEL'),
    });

  step = 'launch chromium';
  const context = await chromium.launchPersistentContext(env('USER_DATA_DIR'), {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: FLAGS,
    viewport: { width: 960, height: 420 },
    timeout: 30_000,
  });
  try {
    result.browser_version = context.browser()?.version() ?? null;
    const alice = await context.newPage();
    const bob = await context.newPage();
    watchPage(alice, 'alice');
    watchPage(bob, 'bob');

    step = 'open pages';
    await alice.goto(pageUrl + fragment('alice', env('ALICE_TOKEN')));
    await bob.goto(pageUrl + fragment('bob', env('BOB_TOKEN')));

    step = 'connect both';
    for (const [who, page] of [['alice', alice], ['bob', bob]]) {
      try {
        await page.waitForSelector('#status[data-state="connected"]', { timeout: 20_000 });
      } catch (e) {
        result.status = { [who]: await page.textContent('#status') };
        throw e;
      }
    }
    result.status = {
      alice: await alice.textContent('#status'),
      bob: await bob.textContent('#status'),
    };

    step = 'alice sends';
    const text = `hi bob, it's alice in Chromium (${new Date().toISOString().slice(11, 19)})`;
    await alice.fill('#text', text);
    await alice.click('#send');

    step = 'bob sees it';
    const onBob = bob.locator('#messages li.message', { hasText: text });
    await onBob.waitFor({ timeout: 10_000 });
    result.bob_message = {
      text: await onBob.locator('.text').textContent(),
      user: await onBob.getAttribute('data-user'),
      id: await onBob.getAttribute('data-id'),
    };
    await alice.locator('#messages li.message.own', { hasText: text }).waitFor({ timeout: 10_000 });
    await bob.locator('#events li', { hasText: 'message.new by alice' }).waitFor({ timeout: 10_000 });
    result.bob_events = await bob.locator('#events li').allTextContents();

    step = 'bob replies';
    const reply = 'hello alice, got it';
    await bob.fill('#text', reply);
    await bob.click('#send');
    await alice.locator('#messages li.message', { hasText: reply }).waitFor({ timeout: 10_000 });
    await bob.locator('#messages li.message.own', { hasText: reply }).waitFor({ timeout: 10_000 });

    step = 'screenshot';
    await bob.screenshot({ path: env('SCREENSHOT') });
    result.screenshot = env('SCREENSHOT');
    result.ok = true;
  } finally {
    await context.close();
  }
}

main().then(
  () => {
    console.log(JSON.stringify(result));
    process.exit(0);
  },
  (e) => {
    console.log(JSON.stringify({ ...result, ok: false, step, error: String(e?.stack ?? e) }));
    process.exit(1);
  },
);
