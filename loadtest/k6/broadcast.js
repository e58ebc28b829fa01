// broadcast: CONNS subscribers in one channel; one publisher at RATE msg/s.
// k6 run -e SECRET=… -e CONNS=1000 -e RATE=10 -e HOLD_S=30 loadtest/k6/broadcast.js
import exec from 'k6/execution';
import { session, token, env, PREFIX } from './lib.js';

const CONNS = env('CONNS', 100);
const RATE = env('RATE', 10);
const HOLD_S = env('HOLD_S', 30);
const CHANNEL = PREFIX + 'broadcast';

export const options = {
  scenarios: {
    subscribers: { executor: 'per-vu-iterations', vus: CONNS, iterations: 1, maxDuration: HOLD_S + 60 + 's', exec: 'subscriber' },
    publisher: { executor: 'per-vu-iterations', vus: 1, iterations: 1, startTime: '5s', maxDuration: HOLD_S + 60 + 's', exec: 'publisher' },
  },
};

export function subscriber() {
  session({ token: token('k6-' + exec.vu.idInTest), channel: CHANNEL, holdMs: (HOLD_S + 10) * 1000 });
}

export function publisher() {
  session({
    token: token('k6-pub'),
    holdMs: HOLD_S * 1000,
    onReady(api) {
      api.socket.setInterval(() => api.publish(CHANNEL), 1000 / RATE);
    },
  });
}
