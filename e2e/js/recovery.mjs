// centrifuge-js recovering after a dropped connection. Usage:
//   node recovery.mjs <ws-url> <token> <subscription token> <server-side channel> <client-side channel> <n>
// The connection token subscribes the user to the server-side channel; the
// client-side channel needs the subscription token. The driving test
// (e2e/js_test.go) publishes 1..n on both channels from another client and
// cuts this client's connection in the middle. Progress goes to stdout as
// JSON lines; the last is {"ok":true,...} when every publication arrived
// once, in order, and both subscriptions were recovered by the server.
import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const [url, token, subToken, serverCh, clientCh, nArg] = process.argv.slice(2);
const n = Number(nArg);
const say = (o) => console.log(JSON.stringify(o));
const fail = (msg) => { say({ ok: false, error: msg }); process.exit(1); };
const timer = setTimeout(() => fail('timeout after 60s'), 60000);

const c = new Centrifuge(url, { websocket: WebSocket, token, minReconnectDelay: 100, maxReconnectDelay: 500 });
const got = { [serverCh]: [], [clientCh]: [] };
const recovered = { [serverCh]: [], [clientCh]: [] }; // one entry per resubscription: was it recovered?
let connects = 0;

const progress = () => say({ event: 'progress', server: got[serverCh].length, client: got[clientCh].length });
const onPub = (channel, ctx) => {
  const want = got[channel].length + 1;
  if (ctx.offset !== want) fail(`${channel}: offset ${ctx.offset} arrived after ${want - 1} (gap, duplicate or reorder)`);
  got[channel].push({ offset: ctx.offset, n: ctx.data.n });
  progress();
  if (got[serverCh].length >= n && got[clientCh].length >= n) finish();
};
c.on('publication', (ctx) => { if (ctx.channel === serverCh) onPub(serverCh, ctx); });
c.on('connected', () => { connects++; });
c.on('connecting', (ctx) => { if (connects > 0) say({ event: 'connecting', code: ctx.code, reason: ctx.reason }); });
let serverSubscribed;
const serverReady = new Promise((resolve) => { serverSubscribed = resolve; });
c.on('subscribed', (ctx) => {
  if (ctx.channel !== serverCh) return;
  serverSubscribed();
  if (ctx.wasRecovering) recovered[serverCh].push(ctx.recovered);
  say({ event: 'subscribed', channel: ctx.channel, recoverable: ctx.recoverable, wasRecovering: ctx.wasRecovering, recovered: ctx.recovered });
});

const sub = c.newSubscription(clientCh, { token: subToken });
sub.on('publication', (ctx) => onPub(clientCh, ctx));
sub.on('subscribed', (ctx) => {
  if (ctx.wasRecovering) recovered[clientCh].push(ctx.recovered);
  say({ event: 'subscribed', channel: ctx.channel, recoverable: ctx.recoverable, wasRecovering: ctx.wasRecovering, recovered: ctx.recovered });
});
sub.on('error', (ctx) => say({ event: 'sub_error', error: ctx.error }));
c.on('error', (ctx) => say({ event: 'error', error: ctx.error }));

function finish() {
  for (const ch of [serverCh, clientCh]) {
    const pubs = got[ch];
    if (pubs.length !== n) fail(`${ch}: ${pubs.length} publications, want ${n}`);
    pubs.forEach((p, i) => {
      if (p.offset !== i + 1 || p.n !== i + 1) fail(`${ch}: publication ${i} is offset ${p.offset} n ${p.n}, want ${i + 1} (gap, duplicate or reorder)`);
    });
    if (recovered[ch].length === 0) fail(`${ch}: never resubscribed with recovery`);
    if (!recovered[ch].every(Boolean)) fail(`${ch}: the server did not recover the subscription: ${JSON.stringify(recovered[ch])}`);
  }
  if (connects < 2) fail(`connected ${connects} time(s), want a reconnect`);
  clearTimeout(timer);
  say({ ok: true, connects, server: got[serverCh].length, client: got[clientCh].length });
  c.disconnect();
  process.exit(0);
}

c.connect();
sub.subscribe();
await sub.ready(15000);
await serverReady;
say({ event: 'ready' });
