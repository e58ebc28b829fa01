// churn: connections that connect, subscribe, stay LIFE_S seconds and leave,
// started at RATE per second for DURATION_S seconds.
// k6 run -e SECRET=… -e RATE=50 -e LIFE_S=5 loadtest/k6/churn.js
import exec from 'k6/execution';
import { session, token, env, PREFIX } from './lib.js';

const RATE = env('RATE', 50);
const LIFE_S = env('LIFE_S', 5);
const DURATION_S = env('DURATION_S', 30);
const CHANNELS = env('CHANNELS', 10);

export const options = {
  scenarios: {
    churn: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION_S + 's',
      preAllocatedVUs: Math.ceil(RATE * (LIFE_S + 1)),
    },
  },
};

export default function () {
  const n = exec.scenario.iterationInTest;
  session({ token: token('k6-churn-' + n), channel: PREFIX + 'churn-' + (n % CHANNELS), holdMs: LIFE_S * 1000 });
}
