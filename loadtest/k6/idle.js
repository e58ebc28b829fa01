// idle: CONNS connections subscribe to one channel and hold for HOLD_S seconds.
// k6 run -e SECRET=… -e CONNS=1000 -e HOLD_S=30 loadtest/k6/idle.js
import exec from 'k6/execution';
import { session, token, env, PREFIX } from './lib.js';

const CONNS = env('CONNS', 100);
const HOLD_S = env('HOLD_S', 30);

export const options = {
  scenarios: {
    idle: { executor: 'per-vu-iterations', vus: CONNS, iterations: 1, maxDuration: HOLD_S + 60 + 's' },
  },
};

export default function () {
  const vu = exec.vu.idInTest;
  session({ token: token('k6-' + vu), channel: PREFIX + 'idle', holdMs: HOLD_S * 1000 });
}
