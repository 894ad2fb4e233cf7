// What the Node.js interop scripts (oauth4webapi.mjs, openid_client.mjs) share: loading the
// packages tests/interop/setup installed, the environment, the JSON report, and describing a
// refusal.

import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';

const interopDir =
  process.env.TESSERA_INTEROP_DIR ?? fileURLToPath(new URL('../../target/interop', import.meta.url));
const requireFromInstall = createRequire(`${interopDir}/node/package.json`);

/** Imports a package from the install in the build tree (not from a node_modules beside us). */
export const load = (name) => import(pathToFileURL(requireFromInstall.resolve(name)).href);

export const oauth = await load('oauth4webapi');
export const jose = await load('jose');

/** The report printed at the end; the flows add what they observe. */
export const out = { ok: true };

let current = 'start';

/** Names the step being run, for the report of a failure. */
export function step(name) {
  current = name;
}

export function env(name, fallback) {
  const v = process.env[name] ?? fallback;
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
}

/** What an error says, for the report: an OAuth error code, a status, a challenge. */
export function describe(err) {
  const d = { name: err?.name, message: err?.message };
  if (err instanceof oauth.ResponseBodyError) {
    d.error = err.error;
    d.error_description = err.error_description;
    d.status = err.status;
  }
  if (err instanceof oauth.WWWAuthenticateChallengeError) {
    d.status = err.status;
    d.challenges = err.cause;
  }
  return d;
}

/** Runs `fn`, which must fail; returns what the failure said. */
export async function refused(fn) {
  try {
    await fn();
  } catch (err) {
    return describe(err);
  }
  throw new Error('expected a refusal, the request succeeded');
}

/** The interesting members of a token response. */
export function summary(t) {
  return {
    token_type: t.token_type,
    expires_in: t.expires_in,
    scope: t.scope,
    has_refresh_token: typeof t.refresh_token === 'string',
  };
}

/** Runs the flow named on the command line and prints the report. */
export async function main(flows) {
  try {
    const [flow, ...args] = process.argv.slice(2);
    const run = flows[flow];
    if (!run) throw new Error(`unknown flow ${flow}; one of ${Object.keys(flows).join(', ')}`);
    out.flow = flow;
    await run(...args);
    process.stdout.write(`${JSON.stringify(out)}\n`);
  } catch (err) {
    process.stdout.write(
      `${JSON.stringify({ ...out, ok: false, step: current, error: describe(err), stack: err?.stack })}\n`,
    );
    process.exit(1);
  }
}
