// Syntax and import check of the k6 scripts without k6: node check.mjs
// Each script is loaded with stub k6 modules (a loader hook maps 'k6/…' to
// stubs), so imports, exports and top-level code are exercised.
import { register } from 'node:module';

const stubs = {
  'k6/ws': 'export default { connect() { return {}; } };',
  'k6/crypto': "export default { hmac() { return 'sig'; } };",
  'k6/encoding': "export default { b64encode(s) { return Buffer.from(s).toString('base64url'); } };",
  'k6/metrics': 'export class Counter { add() {} } export class Trend { add() {} }',
  'k6/execution': 'export default { vu: { idInTest: 1 }, scenario: { iterationInTest: 0 } };',
  k6: 'export function sleep() {}',
};
globalThis.__ENV = { SECRET: 'x' };
const hooks = `
const stubs = ${JSON.stringify(stubs)};
export async function resolve(spec, ctx, next) {
  if (spec in stubs) return { url: 'k6stub:' + spec, shortCircuit: true };
  return next(spec, ctx);
}
export async function load(url, ctx, next) {
  if (url.startsWith('k6stub:')) return { format: 'module', source: stubs[url.slice(7)], shortCircuit: true };
  if (url.endsWith('.js')) { const r = await next(url, { ...ctx, format: 'module' }); return { ...r, format: 'module' }; }
  return next(url, ctx);
}`;
register('data:text/javascript,' + encodeURIComponent(hooks));

let failed = false;
for (const f of ['idle', 'broadcast', 'chat', 'churn', 'recovery']) {
  try {
    const m = await import(new URL(`./${f}.js`, import.meta.url));
    if (!m.options || !m.options.scenarios) throw new Error('no options.scenarios');
    for (const [name, sc] of Object.entries(m.options.scenarios)) {
      const fn = sc.exec ? m[sc.exec] : m.default;
      if (typeof fn !== 'function') throw new Error(`scenario ${name}: no function ${sc.exec || 'default'}`);
      fn(); // runs against the stubs
    }
    console.log('ok  ', f);
  } catch (e) {
    failed = true;
    console.log('FAIL', f, e.message);
  }
}
process.exit(failed ? 1 : 0);
