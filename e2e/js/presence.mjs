// centrifuge-js presence against a running Herald relay. Usage:
//   node presence.mjs <ws-url> <token-a> <token-b> <channel>
// Both tokens grant sub on channel (caps); its namespace must have presence
// and join_leave. Checks sub.presence(), sub.presenceStats() and the
// subscription's 'join' and 'leave' events (joinLeave: true). Exits 0 and
// prints {"ok":true,...} when every check passed.
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const [url, tokenA, tokenB, channel] = process.argv.slice(2);
const fail = (msg) => { console.error('FAIL: ' + msg); process.exit(1); };
const timer = setTimeout(() => fail('timeout after 30s'), 30000);
const waitUntil = async (cond, what) => {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 50));
  if (!cond()) fail(what);
};

const a = new Centrifuge(url, { websocket: WebSocket, token: tokenA });
const subA = a.newSubscription(channel, { joinLeave: true });
const joins = [], leaves = [];
subA.on('join', (ctx) => joins.push(ctx.info));
subA.on('leave', (ctx) => leaves.push(ctx.info));
a.connect();
subA.subscribe();
await subA.ready(10000);

const b = new Centrifuge(url, { websocket: WebSocket, token: tokenB });
const subB = b.newSubscription(channel);
b.connect();
subB.subscribe();
await subB.ready(10000);

await waitUntil(() => joins.some((i) => i.user === 'jsb'), `no join of jsb: ${JSON.stringify(joins)}`);

let pres;
for (let i = 0; i < 100; i++) {
  pres = await subA.presence();
  if (Object.keys(pres.clients).length === 2) break;
  await new Promise((r) => setTimeout(r, 50));
}
const users = Object.values(pres.clients).map((c) => c.user).sort();
if (users.join(',') !== 'jsa,jsb') fail(`presence: ${JSON.stringify(pres)}`);
for (const [id, c] of Object.entries(pres.clients)) {
  if (c.client !== id) fail(`presence: client ${id} has ${JSON.stringify(c)}`);
  if (!c.connInfo || c.connInfo.name !== c.user) fail(`presence: conn_info of ${id}: ${JSON.stringify(c)}`);
}
const stats = await subB.presenceStats();
if (stats.numClients !== 2 || stats.numUsers !== 2) fail(`presence_stats: ${JSON.stringify(stats)}`);

b.disconnect();
await waitUntil(() => leaves.some((i) => i.user === 'jsb'), `no leave of jsb: ${JSON.stringify(leaves)}`);
const after = await subA.presenceStats();
if (after.numClients !== 1) fail(`presence_stats after the leave: ${JSON.stringify(after)}`);

clearTimeout(timer);
a.disconnect();
console.log(JSON.stringify({ ok: true, joins: joins.length, leaves: leaves.length, presence: users }));
process.exit(0);
