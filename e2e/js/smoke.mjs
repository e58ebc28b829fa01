// centrifuge-js against a running Herald relay. Usage:
//   node smoke.mjs <ws-url> <token> <server-side channel> <client-side channel> <n>
// The token must subscribe the user to the server-side channel and grant
// sub+pub on the client-side one (caps). Exits 0 when every check passed.
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const [url, token, serverCh, clientCh, nArg] = process.argv.slice(2);
const n = Number(nArg || 5);
const fail = (msg) => { console.error('FAIL: ' + msg); process.exit(1); };
const timer = setTimeout(() => fail('timeout after 30s'), 30000);

const c = new Centrifuge(url, { websocket: WebSocket, token });
const serverPubs = [];
c.on('publication', (ctx) => { if (ctx.channel === serverCh) serverPubs.push(ctx); });
const serverSubscribed = new Promise((resolve) => c.on('subscribed', (ctx) => { if (ctx.channel === serverCh) resolve(ctx); }));
c.on('error', (ctx) => console.error('client error', JSON.stringify(ctx)));

const sub = c.newSubscription(clientCh);
const clientPubs = [];
sub.on('publication', (ctx) => clientPubs.push(ctx));

c.connect();
await serverSubscribed;
sub.subscribe();
await sub.ready(10000);

const waitUntil = async (cond, what) => {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 50));
  if (!cond()) fail(what);
};
const checkOffsets = (pubs, what) => pubs.forEach((p, i) => {
  if (p.offset !== i + 1) fail(`${what}: publication ${i} has offset ${p.offset}, want ${i + 1}`);
  if (p.data.n !== i + 1) fail(`${what}: publication ${i} data ${JSON.stringify(p.data)}`);
});

for (let i = 1; i <= n; i++) {
  await c.publish(serverCh, { text: `js ${i}`, n: i });
  await sub.publish({ text: `js client-side ${i}`, n: i });
}
await waitUntil(() => serverPubs.length >= n, `server-side: got ${serverPubs.length}/${n}`);
await waitUntil(() => clientPubs.length >= n, `client-side: got ${clientPubs.length}/${n}`);
checkOffsets(serverPubs, 'server-side');
checkOffsets(clientPubs, 'client-side');

// History goes relay → management; persistence is asynchronous, so retry.
let hist;
for (let i = 0; i < 100; i++) {
  hist = await sub.history({ limit: 100 });
  if (hist.publications.length >= n) break;
  await new Promise((r) => setTimeout(r, 100));
}
if (hist.publications.length !== n) fail(`history: ${hist.publications.length} publications, want ${n}`);
checkOffsets(hist.publications, 'history');

clearTimeout(timer);
c.disconnect();
console.log(JSON.stringify({ ok: true, server: serverPubs.length, client: clientPubs.length, history: hist.publications.length }));
process.exit(0);
