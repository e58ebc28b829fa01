// Herald's chat page in headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core; no browser download). Driven by
// e2e/browser_test.go, which starts the stack and passes one JSON argument:
//   {page, prodPage, prodToken, cacher, artifacts, n}
// page: the dev page (with /dev/token); prodPage: a production management
// serving the page without it; prodToken: a token for that one; cacher: the
// cacher's base URL (archive run); artifacts: where screenshots go; n: how
// many messages are published while a page is offline.
// Prints one JSON line per step; exits 0 when every check passed.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const cfg = JSON.parse(process.argv[2]);
const N = cfg.n || 10;
const T = 20000; // per wait
const step = (name, extra = {}) => console.log(JSON.stringify({ step: name, ...extra }));
const problems = []; // console errors and page errors, of every page
let browser;

async function fail(msg) {
  console.log(JSON.stringify({ ok: false, error: msg, problems }));
  try { await browser?.close(); } catch { /* exiting anyway */ }
  process.exit(1);
}
setTimeout(() => fail('timeout after 150s'), 150000).unref();

// offline holds the contexts set offline (until connected again): Chromium
// itself logs each WebSocket connect attempt that fails there
// (net::ERR_INTERNET_DISCONNECTED, as centrifuge-js keeps retrying) or that
// the SDK aborts when the network is back. Those browser lines about the
// relay's socket are expected then; nothing else is.
const offline = new Set();
const socketFailure = /^WebSocket connection to 'wss?:\/\/[^']+\/connection\/websocket' failed: /;

function watch(page, who) {
  page.on('console', (m) => {
    if (m.type() !== 'error' && m.type() !== 'warning') return;
    if (offline.has(page.context()) && socketFailure.test(m.text())) return;
    problems.push(`${who} console.${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`${who} page error: ${e.message}`));
  return page;
}

// seqs returns [seq, user, text] of every message of channel shown by page.
const shown = (page, channel) => page.$$eval(`ol.messages[data-channel="${channel}"] li[data-seq]`,
  (lis) => lis.map((li) => [Number(li.dataset.seq), li.dataset.user, li.querySelector('.text').textContent]));

async function waitFor(page, what, fn, arg) {
  try {
    await page.waitForFunction(fn, arg, { timeout: T, polling: 50 });
  } catch (e) {
    await fail(`waiting for ${what}: ${e.message.split('\n')[0]}`);
  }
}

const waitConnected = (page, what) => waitFor(page, `${what} connected`, () => document.getElementById('conn').dataset.state === 'connected');
const waitRoomState = (page, state, what) => waitFor(page, `${what} room state ${state}`,
  (s) => document.getElementById('room-state').dataset.state === s, state);
const waitCount = (page, channel, n, what) => waitFor(page, `${what}: ${n} messages in ${channel}`,
  ([ch, n]) => document.querySelectorAll(`ol.messages[data-channel="${ch}"] li[data-seq]`).length >= n, [channel, n]);

// checkDense: exactly seqs 1..want, each once, in order, with the given texts.
async function checkDense(page, channel, want, texts, what) {
  const got = await shown(page, channel);
  const seqs = got.map((m) => m[0]);
  const ok = seqs.length === want && seqs.every((s, i) => s === i + 1);
  if (!ok) await fail(`${what}: ${channel} shows seqs ${JSON.stringify(seqs)}, want 1..${want} once each, in order`);
  if (texts) {
    for (let i = 0; i < want; i++) {
      if (got[i][2] !== texts[i]) await fail(`${what}: seq ${i + 1} shows ${JSON.stringify(got[i][2])}, want ${JSON.stringify(texts[i])}`);
    }
  }
  return got;
}

async function login(page, name) {
  await page.goto(cfg.page);
  await page.waitForSelector('#login-name', { state: 'visible', timeout: T });
  // Keyboard only: the name field has focus; Enter submits.
  await page.keyboard.type(name);
  await page.keyboard.press('Enter');
  await waitConnected(page, name);
  await waitRoomState(page, 'live', name);
}

async function send(page, text) {
  await page.focus('#text');
  await page.keyboard.insertText(text);
  await page.keyboard.press('Enter');
  await waitFor(page, `the composer to clear after sending ${JSON.stringify(text.slice(0, 40))}`, () => document.getElementById('text').value === '');
}

async function select(page, channel) {
  await page.click(`button.room[data-channel="${channel}"]`);
  await waitFor(page, `${channel} selected`, (ch) => document.querySelector('button.room.active')?.dataset.channel === ch, channel);
}

const launchArgs = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-dev-shm-usage'];
browser = await chromium.launch({ executablePath: process.env.HERALD_CHROMIUM || '/usr/bin/chromium', args: launchArgs });
mkdirSync(cfg.artifacts, { recursive: true });

const lobby = 'chat:lobby';
const texts = []; // the lobby's messages, by seq - 1

// 1. Two pages chat with each other.
const ctxA = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const ctxB = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const a = watch(await ctxA.newPage(), 'alice');
const b = watch(await ctxB.newPage(), 'bob');
await login(a, 'alice');
await login(b, 'bob');
step('logged in');
await send(a, 'Hi Bob! This is Herald in a browser.'); texts.push('Hi Bob! This is Herald in a browser.');
await waitCount(b, lobby, 1, 'bob');
await send(b, 'Hello Alice — live, through the relay and Kafka.'); texts.push('Hello Alice — live, through the relay and Kafka.');
await waitCount(a, lobby, 2, 'alice');
await waitCount(b, lobby, 2, 'bob');
await checkDense(a, lobby, 2, texts, 'alice');
await checkDense(b, lobby, 2, texts, 'bob');
const users = (await shown(a, lobby)).map((m) => m[1]).join(',');
if (users !== 'alice,bob') await fail(`senders shown ${users}, want alice,bob`);
step('two pages chat');

// 2. Unread counts: bob writes in chat:dev while alice reads the lobby.
await select(b, 'chat:dev');
await send(b, 'Anyone around in #dev?');
await send(b, 'Unread counts should show 2 here.');
await waitFor(a, 'the unread badge of chat:dev to read 2',
  () => document.querySelector('button.room[data-channel="chat:dev"] .badge')?.textContent === '2');
await select(a, 'chat:dev');
await waitFor(a, 'the badge to clear', () => document.querySelector('button.room[data-channel="chat:dev"] .badge').hidden);
await checkDense(a, 'chat:dev', 2, null, 'alice in chat:dev');
step('unread counts');

// 3. Keyboard channel switching: Alt+ArrowUp goes back to the lobby.
await a.focus('#text');
await a.keyboard.press('Alt+ArrowUp');
await waitFor(a, 'Alt+ArrowUp to select the lobby', () => document.querySelector('button.room.active')?.dataset.channel === 'chat:lobby');
await select(b, lobby);
step('keyboard switching');

// 4. Join a channel by name, client-side (caps chat:*).
await a.fill('#join-name', 'random');
await a.press('#join-name', 'Enter');
await waitRoomState(a, 'live', 'alice in chat:random');
await send(a, 'First in #random.');
await waitCount(a, 'chat:random', 1, 'alice');
await select(a, lobby);
step('join by name');

// 5. Offline: alice misses N messages, comes back, shows each once, in order.
offline.add(ctxA);
await ctxA.setOffline(true);
await waitFor(a, 'alice to notice she is offline', () => document.getElementById('conn').dataset.state === 'reconnecting');
const before = (await shown(a, lobby)).length;
for (let i = 1; i <= N; i++) {
  const t = `While you were away ${i}/${N}`;
  await send(b, t);
  texts.push(t);
}
await waitCount(b, lobby, texts.length, 'bob');
await a.waitForTimeout(300);
if ((await shown(a, lobby)).length !== before) await fail('alice received messages while offline');
step('offline', { missed: N });
await ctxA.setOffline(false);
await waitConnected(a, 'alice again');
offline.delete(ctxA);
await waitRoomState(a, 'recovered', 'alice after coming back');
await waitCount(a, lobby, texts.length, 'alice after coming back');
await a.waitForTimeout(300); // a duplicate would show up by now
await checkDense(a, lobby, texts.length, texts, 'alice after coming back');
const notice = await a.$eval(`ol.messages[data-channel="${lobby}"] li.system:last-child`, (li) => li.textContent);
if (!notice.includes(`${N} missed messages recovered, no gap`)) await fail(`recovery notice ${JSON.stringify(notice)}`);
step('recovered', { notice });
await a.screenshot({ path: join(cfg.artifacts, 'chat-desktop-recovered.png') });

// 6. A message with HTML shows as text and runs nothing.
const xss = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=1">';
await send(b, xss); texts.push(xss);
await waitCount(a, lobby, texts.length, 'alice');
await a.waitForTimeout(200);
const last = (await shown(a, lobby)).at(-1);
if (last[2] !== xss) await fail(`the HTML message shows as ${JSON.stringify(last[2])}`);
for (const [p, who] of [[a, 'alice'], [b, 'bob']]) {
  const bad = await p.evaluate(() => ({ pwned: window.__pwned, els: document.querySelectorAll('.messages script, .messages img').length }));
  if (bad.pwned !== undefined || bad.els !== 0) await fail(`${who}: the HTML message was interpreted: ${JSON.stringify(bad)}`);
}
step('escaping');

// 7. History across the S3 archive boundary after a reload.
for (let i = texts.length + 1; i <= 22; i++) {
  const t = `History line ${i}`;
  await send(b, t);
  texts.push(t);
}
await waitCount(a, lobby, texts.length, 'alice');
const token = await a.evaluate(() => sessionStorage.getItem('herald.name'));
if (token !== 'alice') await fail('alice is not remembered for the reload');
let archived = 0;
for (let i = 0; i < 100 && archived < 16; i++) {
  await b.request.post(`${cfg.cacher}/v1/archive/run`);
  const tok = await (await a.request.post(new URL('/dev/token', cfg.page).href, { data: { name: 'alice' } })).json();
  const ch = await (await a.request.get(new URL(`/v1/channels/${lobby}`, cfg.page).href, { headers: { Authorization: `Bearer ${tok.token}` } })).json();
  archived = ch.archived_through || 0;
  if (archived < 16) await a.waitForTimeout(100);
}
if (archived < 16) await fail(`the cacher archived only through seq ${archived}`);
step('archived', { archived_through: archived });
await a.goto(new URL('/?page=5', cfg.page).href);
await waitConnected(a, 'alice after reload');
await waitCount(a, lobby, 5, 'alice after reload');
for (let i = 0; i < 20; i++) {
  if (await a.isVisible('#history-start')) break;
  if (await a.isVisible('#older') && await a.isEnabled('#older')) await a.click('#older');
  await a.waitForTimeout(150);
}
await waitFor(a, 'the beginning of the lobby', () => !document.getElementById('history-start').hidden);
await checkDense(a, lobby, texts.length, texts, 'alice after reload, paging back through S3');
step('history after reload', { messages: texts.length, archived_through: archived });
await a.evaluate(() => { document.getElementById('scroller').scrollTop = 1e9; });
await a.screenshot({ path: join(cfg.artifacts, 'chat-desktop.png') });

// 8. Phone width, keyboard-only too.
const ctxC = await browser.newContext({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
const c = watch(await ctxC.newPage(), 'carol');
await login(c, 'carol');
await waitCount(c, lobby, Math.min(texts.length, 30), 'carol');
const overflow = await c.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
if (overflow) await fail('the page is wider than a 390 px phone');
await send(c, 'Reading this on a phone.'); texts.push('Reading this on a phone.');
await waitCount(c, lobby, 23, 'carol');
await c.screenshot({ path: join(cfg.artifacts, 'chat-phone.png') });
const ctxD = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: 'dark' });
const d = watch(await ctxD.newPage(), 'dave');
await login(d, 'dave');
await waitCount(d, lobby, Math.min(texts.length, 30), 'dave');
await d.screenshot({ path: join(cfg.artifacts, 'chat-desktop-dark.png') });
step('screenshots', { dir: cfg.artifacts });

// 9. Production mode: no dev token endpoint (404); the page takes a token.
const ctxP = await browser.newContext({ viewport: { width: 1280, height: 800 } });
const p = watch(await ctxP.newPage(), 'prod');
const status = (await p.request.post(new URL('/dev/token', cfg.prodPage).href, { data: { name: 'mallory' } })).status();
if (status !== 404) await fail(`production POST /dev/token answered ${status}, want 404`);
await p.goto(cfg.prodPage);
await p.waitForSelector('#token-input', { state: 'visible', timeout: T });
if (await p.isVisible('#login-name')) await fail('the production page offers dev login');
await p.goto(cfg.prodPage + '#token=' + cfg.prodToken);
await waitConnected(p, 'prod page');
await waitCount(p, lobby, Math.min(texts.length, 30), 'prod page');
if (new URL(p.url()).hash) await fail('the token stayed in the URL');
step('production mode', { dev_token_status: status });

// Presence: Herald has none yet; the panel must stay hidden, quietly.
if (await a.isVisible('#presence')) await fail('the online panel shows although the server has no presence');

for (const pg of [a, b, c, d, p]) await pg.evaluate(() => 0); // flush pending events
if (problems.length) await fail(`console or page errors: ${problems.join(' | ')}`);
await browser.close();
console.log(JSON.stringify({ ok: true, messages: texts.length }));
process.exit(0);
