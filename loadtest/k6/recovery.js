// recovery: subscribers leave mid-stream and come back with recover/offset/epoch;
// herald_lost and herald_duplicated must stay 0. A publisher publishes at RATE.
// k6 run -e SECRET=… -e CONNS=100 -e RATE=50 loadtest/k6/recovery.js
import exec from 'k6/execution';
import { sleep } from 'k6';
import { session, token, env, PREFIX } from './lib.js';

const CONNS = env('CONNS', 50);
const RATE = env('RATE', 50);
const HOLD_S = env('HOLD_S', 20);
const AWAY_S = env('AWAY_S', 1);
const CHANNEL = PREFIX + 'recovery';

export const options = {
  scenarios: {
    subscribers: { executor: 'per-vu-iterations', vus: CONNS, iterations: 1, maxDuration: 2 * HOLD_S + 60 + 's', exec: 'subscriber' },
    publisher: { executor: 'per-vu-iterations', vus: 1, iterations: 1, startTime: '3s', maxDuration: 2 * HOLD_S + 60 + 's', exec: 'publisher' },
  },
  thresholds: { herald_lost: ['count==0'], herald_duplicated: ['count==0'] },
};

export function subscriber() {
  const tok = token('k6-' + exec.vu.idInTest);
  // First half, a pause while publishing goes on, then resubscribe with recover.
  const first = session({ token: tok, channel: CHANNEL, holdMs: (HOLD_S / 2 + 3) * 1000 });
  sleep(AWAY_S);
  session({ token: tok, channel: CHANNEL, holdMs: (HOLD_S / 2 + 3) * 1000, tracker: first.tracker });
}

export function publisher() {
  session({
    token: token('k6-pub'),
    holdMs: (HOLD_S + AWAY_S) * 1000,
    onReady(api) {
      api.socket.setInterval(() => api.publish(CHANNEL), 1000 / RATE);
    },
  });
}
