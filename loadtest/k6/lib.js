// Shared helpers for the Herald k6 scripts: HS256 tokens, the Centrifugo v2
// JSON client protocol over k6/ws, and per-channel seq tracking.
// Environment: URL (ws://127.0.0.1:8000/connection/websocket), SECRET
// (HERALD_TOKEN_SECRET), PREFIX (channel prefix; default per run).
import ws from 'k6/ws';
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import { Counter, Trend } from 'k6/metrics';

export const URL = __ENV.URL || 'ws://127.0.0.1:8000/connection/websocket';
export const SECRET = __ENV.SECRET || __ENV.HERALD_TOKEN_SECRET || '';
export const PREFIX = __ENV.PREFIX || 'k6-' + Math.floor(Date.now() / 1000) + ':';

export const connectLatency = new Trend('herald_connect_ms', true);
export const ackLatency = new Trend('herald_publish_ack_ms', true);
export const e2eLatency = new Trend('herald_publish_to_delivery_ms', true);
export const deliveries = new Counter('herald_deliveries');
export const lost = new Counter('herald_lost');
export const duplicated = new Counter('herald_duplicated');
export const connectErrors = new Counter('herald_connect_errors');

function b64url(s) {
  return encoding.b64encode(s, 'rawurl');
}

// token signs a connection token: sub, exp, caps (sub+pub on every channel)
// and, for server-side subscriptions, channels.
export function token(sub, channels) {
  if (!SECRET) throw new Error('set SECRET (the HS256 token secret)');
  const header = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = {
    sub: sub,
    exp: Math.floor(Date.now() / 1000) + 3600,
    caps: [{ channels: ['*'], match: 'wildcard', allow: ['sub', 'pub'] }],
  };
  if (channels) claims.channels = channels;
  const body = b64url(JSON.stringify(claims));
  return header + '.' + body + '.' + crypto.hmac('sha256', SECRET, header + '.' + body, 'base64rawurl');
}

// session opens one connection, connects, subscribes to channel (if any)
// and keeps it for holdMs. hooks: onReady(api), onPub(channel, pub).
// api.publish(channel) sends {"t": now_ns, "p": pad}. Recovery: pass
// position {offset, epoch} to resubscribe with recover.
export function session(opts) {
  const tracker = opts.tracker || { last: -1, epoch: '' };
  let nextId = 0;
  const pending = {};
  const started = Date.now();
  const res = ws.connect(URL, {}, function (socket) {
    const send = (obj) => socket.send(JSON.stringify(obj));
    const api = {
      socket: socket,
      tracker: tracker,
      publish(channel) {
        const id = ++nextId;
        pending[id] = { t: Date.now(), kind: 'publish' };
        send({ id: id, publish: { channel: channel, data: { t: Date.now() * 1e6, p: 'k6' } } });
      },
    };
    socket.on('open', function () {
      const id = ++nextId;
      pending[id] = { t: started, kind: 'connect' };
      send({ id: id, connect: { token: opts.token } });
    });
    socket.on('message', function (frame) {
      for (const line of String(frame).split('\n')) {
        if (!line.trim()) continue;
        const m = JSON.parse(line);
        if (!m.id && !m.push) {
          socket.send('{}'); // pong
          continue;
        }
        if (m.push && m.push.pub) {
          observe(tracker, m.push.pub);
          if (opts.onPub) opts.onPub(m.push.channel, m.push.pub);
          continue;
        }
        const p = pending[m.id];
        if (!p) continue;
        delete pending[m.id];
        if (m.error) {
          if (p.kind !== 'publish') connectErrors.add(1);
          socket.close();
          return;
        }
        if (p.kind === 'connect') {
          connectLatency.add(Date.now() - p.t);
          if (opts.channel) {
            const id = ++nextId;
            pending[id] = { t: Date.now(), kind: 'subscribe' };
            const sub = { channel: opts.channel };
            if (tracker.last >= 0) Object.assign(sub, { recover: true, offset: tracker.last, epoch: tracker.epoch });
            send({ id: id, subscribe: sub });
          } else if (opts.onReady) {
            opts.onReady(api);
          }
        } else if (p.kind === 'subscribe') {
          const r = m.subscribe || {};
          if (tracker.last < 0) tracker.last = r.offset || 0;
          tracker.epoch = r.epoch || '';
          for (const pub of r.publications || []) observe(tracker, pub);
          if (opts.onReady) opts.onReady(api);
        } else if (p.kind === 'publish') {
          ackLatency.add(Date.now() - p.t);
        }
      }
    });
    socket.on('error', function () {
      connectErrors.add(1);
    });
    socket.setTimeout(function () {
      socket.close();
    }, opts.holdMs);
  });
  return { res: res, tracker: tracker };
}

// observe checks a publication's offset against the channel's last seq.
function observe(tracker, pub) {
  deliveries.add(1);
  const off = pub.offset || 0;
  if (pub.data && pub.data.t) e2eLatency.add(Date.now() - pub.data.t / 1e6);
  if (!off || tracker.last < 0) return;
  if (off <= tracker.last) {
    duplicated.add(1);
    return;
  }
  if (off > tracker.last + 1) lost.add(off - tracker.last - 1);
  tracker.last = off;
}

export function env(name, def) {
  const v = __ENV[name];
  return v === undefined || v === '' ? def : Number(v);
}
