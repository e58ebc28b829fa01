// chat: CONNS connections over CHANNELS channels; every connection publishes
// to its channel so that the total is RATE msg/s.
// k6 run -e SECRET=… -e CONNS=1000 -e CHANNELS=100 -e RATE=100 loadtest/k6/chat.js
import exec from 'k6/execution';
import { session, token, env, PREFIX } from './lib.js';

const CONNS = env('CONNS', 100);
const CHANNELS = env('CHANNELS', 10);
const RATE = env('RATE', 100);
const HOLD_S = env('HOLD_S', 30);

export const options = {
  scenarios: {
    chat: { executor: 'per-vu-iterations', vus: CONNS, iterations: 1, maxDuration: HOLD_S + 60 + 's' },
  },
};

export default function () {
  const vu = exec.vu.idInTest;
  const channel = PREFIX + 'chat-' + (vu % CHANNELS);
  const perConnMs = (1000 * CONNS) / RATE; // each connection's share of RATE
  session({
    token: token('k6-' + vu),
    channel: channel,
    holdMs: HOLD_S * 1000,
    onReady(api) {
      api.socket.setTimeout(() => {
        api.socket.setInterval(() => api.publish(channel), perConnMs);
      }, Math.random() * perConnMs);
    },
  });
}
