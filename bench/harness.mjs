// Tessera's load harness. Started by bench/run, which installs wrk and the peer and builds the
// release binary first; see BENCHMARKS.md for what it measures and how to read the output.
//
// It starts Tessera (and, for PostgreSQL, a throwaway PostgreSQL cluster), creates the
// clients with `tessera client create --json`, drives each workload with wrk over keep-alive
// HTTP on loopback, samples the server's CPU time and memory from /proc, then does the same
// for the peer (node-oidc-provider), and prints one table per backend plus the ratios.
// Everything it starts, it stops. All traffic goes to 127.0.0.1.

import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..');
const LUA = path.join(here, 'wrk', 'workload.lua');
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

// ---------------------------------------------------------------- options

const USAGE = `usage: bench/run [--smoke | --soak] [options]

  (default)            full run: every workload, on every backend, and the peer
  --smoke              a few seconds per workload; fails on missing numbers or any error
  --soak               10 minutes of mixed load with the background cleanup running
  --duration S         seconds per measured run (default 10; smoke 2)
  --soak-duration S    soak length in seconds (default 600)
  --sample S           soak sampling interval in seconds (default 30)
  --connections N      wrk connections (default 64)
  --threads N          wrk threads (default 2)
  --backends LIST      comma-separated: sqlite,postgres (default both; soak: sqlite)
  --database-url URL   the PostgreSQL database to use (default: a throwaway cluster)
  --no-peer            skip the peer
  --fraction F         paced runs target this fraction of peak throughput (default 0.8)
  --bin PATH           the tessera binary (bench/run passes the release build)
  --keep               keep the work directory (databases, logs, pools)
  --workloads LIST     comma-separated subset of Tessera's workloads (default all):
                       cc,jwt,introspect,refresh,revoke (for quick before/after comparisons)
`;

function parseArgs(argv) {
  const o = {
    mode: 'full', workloads: null, duration: null, soakDuration: 600, sample: 30, connections: 64, threads: 2,
    backends: null, databaseUrl: null, peer: true, fraction: 0.8, bin: null, keep: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) die(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--smoke': o.mode = 'smoke'; break;
      case '--soak': o.mode = 'soak'; break;
      case '--duration': o.duration = posNum(a, val()); break;
      case '--soak-duration': o.soakDuration = posNum(a, val()); break;
      case '--sample': o.sample = posNum(a, val()); break;
      case '--connections': o.connections = posNum(a, val()); break;
      case '--threads': o.threads = posNum(a, val()); break;
      case '--backends': o.backends = val().split(',').filter(Boolean); break;
      case '--database-url': o.databaseUrl = val(); break;
      case '--no-peer': o.peer = false; break;
      case '--fraction': o.fraction = posNum(a, val()); break;
      case '--bin': o.bin = val(); break;
      case '--keep': o.keep = true; break;
      case '--workloads': o.workloads = new Set(val().split(',').filter(Boolean)); break;
      case '-h': case '--help': process.stdout.write(USAGE); process.exit(0); break;
      default: die(`unknown option ${a}\n${USAGE}`);
    }
  }
  for (const b of o.backends || []) {
    if (b !== 'sqlite' && b !== 'postgres') die(`unknown backend ${b} (sqlite or postgres)`);
  }
  if (!o.backends) o.backends = o.mode === 'soak' ? ['sqlite'] : ['sqlite', 'postgres'];
  if (o.duration == null) o.duration = o.mode === 'smoke' ? 2 : 10;
  if (o.threads > o.connections) die('--threads must not exceed --connections');
  if (!o.bin) o.bin = path.join(process.env.CARGO_TARGET_DIR || path.join(repo, 'target'), 'release', 'tessera');
  if (!fs.existsSync(o.bin)) die(`no tessera binary at ${o.bin} (build with cargo build --release)`);
  return o;
}

function posNum(name, s) {
  const n = Number(s);
  if (!Number.isFinite(n) || n <= 0) die(`${name} must be a positive number`);
  return n;
}

function die(msg) {
  process.stderr.write(`bench: ${msg}\n`);
  cleanupAll();
  process.exit(2);
}

function log(msg) {
  process.stderr.write(`bench: ${msg}\n`);
}

// ---------------------------------------------------------------- processes

const children = new Set();
const cleanups = [];

function cleanupAll() {
  for (const c of children) {
    try { process.kill(c.pid, 'SIGKILL'); } catch { /* gone */ }
  }
  children.clear();
  while (cleanups.length) {
    try { cleanups.pop()(); } catch { /* best effort */ }
  }
}
process.on('exit', cleanupAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => { log(`${sig}: stopping`); cleanupAll(); process.exit(130); });
}

function startProcess(cmd, args, { env = {}, logFile, cwd } = {}) {
  const out = fs.openSync(logFile, 'a');
  const child = spawn(cmd, args, {
    env: { ...process.env, ...env }, stdio: ['ignore', out, out], cwd,
  });
  fs.closeSync(out);
  children.add(child);
  child.exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => { children.delete(child); resolve({ code, signal }); });
  });
  return child;
}

async function stopProcess(child, graceMs = 10000) {
  if (!children.has(child)) return;
  try { child.kill('SIGTERM'); } catch { /* gone */ }
  const t = setTimeout(() => { try { child.kill('SIGKILL'); } catch { /* gone */ } }, graceMs);
  await child.exited;
  clearTimeout(t);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function waitHttp(url, child, logFile, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!children.has(child)) {
      return { ok: false, reason: `exited: ${tail(logFile, 5)}` };
    }
    try {
      const r = await fetch(url, { signal: AbortSignal.timeout(2000) });
      if (r.status < 500) return { ok: true };
    } catch { /* not yet */ }
    await sleep(100);
  }
  return { ok: false, reason: `not ready after ${timeoutMs / 1000} s: ${tail(logFile, 5)}` };
}

function tail(file, n) {
  try {
    return fs.readFileSync(file, 'utf8').trim().split('\n').slice(-n).join(' | ');
  } catch { return '(no log)'; }
}

// ---------------------------------------------------------------- /proc sampling

function procTicks(pid) {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]); // utime + stime (fields 14 and 15)
}

// CPU ticks of a process and its direct children (PostgreSQL: the postmaster and its backends).
function treeTicks(pid) {
  let total = 0;
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const s = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
      if (Number(d) === pid || Number(f[1]) === pid) total += Number(f[11]) + Number(f[12]);
    } catch { /* exited */ }
  }
  return total;
}

function procMem(pid) {
  const s = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k) => Number((s.match(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm')) || [])[1] || 0);
  return { rssKiB: kb('VmRSS'), hwmKiB: kb('VmHWM') };
}

function machineTicks() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  // steal: time the hypervisor ran something else while this machine's CPUs wanted to run.
  return { total, idle: f[3] + f[4], steal: f[7] || 0 };
}

// ---------------------------------------------------------------- wrk

async function wrk(target, { kind, seconds, rate = 0, pool = null, quota = 0, env = {}, connections, threads }) {
  const args = ['-t', String(threads), '-c', String(connections), '-d', `${Math.ceil(seconds)}s`,
    '--timeout', '10s', '-s', LUA, target.url];
  const wenv = {
    ...process.env,
    BENCH_KIND: kind,
    BENCH_AUTH: target.auth,
    BENCH_SCOPE: target.scope,
    BENCH_TOKEN_PATH: target.tokenPath,
    BENCH_INTROSPECT_PATH: target.introspectPath,
    BENCH_REVOKE_PATH: target.revokePath || '/oauth2/revoke',
    BENCH_THREADS: String(threads),
    ...(pool ? { BENCH_POOL: pool } : {}),
    ...(quota ? { BENCH_QUOTA: String(quota) } : {}),
    ...(rate ? { BENCH_RATE: String(rate) } : {}),
    ...env,
  };
  const pid = target.pid();
  const t0 = procTicks(pid);
  const d0 = target.dbPid ? treeTicks(target.dbPid) : 0;
  const m0 = machineTicks();
  const w0 = process.hrtime.bigint();
  const child = spawn('wrk', args, { env: wenv, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => { stdout += d; });
  child.stderr.on('data', (d) => { stderr += d; });
  const code = await new Promise((resolve) => child.on('exit', (c) => { children.delete(child); resolve(c); }));
  const wall = Number(process.hrtime.bigint() - w0) / 1e9;
  const t1 = procTicks(pid);
  const d1 = target.dbPid ? treeTicks(target.dbPid) : 0;
  const m1 = machineTicks();
  const mem = procMem(pid);
  const line = stdout.split('\n').find((l) => l.startsWith('BENCH_RESULT '));
  if (code !== 0 || !line) {
    return { kind, failed: `wrk exited ${code}: ${(stderr || stdout).trim().slice(0, 500)}` };
  }
  const r = JSON.parse(line.slice('BENCH_RESULT '.length));
  r.serverCores = (t1 - t0) / CLK_TCK / wall;
  r.dbCores = target.dbPid ? (d1 - d0) / CLK_TCK / wall : null;
  r.machineBusy = 1 - (m1.idle - m0.idle) / Math.max(1, m1.total - m0.total);
  r.machineSteal = (m1.steal - m0.steal) / Math.max(1, m1.total - m0.total);
  r.rssKiB = mem.rssKiB;
  r.hwmKiB = mem.hwmKiB;
  r.targetRate = rate;
  // The script sees every response, so `bad` already counts the statuses wrk calls errors
  // (>= 400); the max guards against a response the script did not see.
  r.errors = Math.max(r.bad, r.status_errors) + r.connect_errors + r.read_errors + r.write_errors + r.timeouts;
  return r;
}

// Runs client_credentials (one wrk thread) until `count` grants are written to `pool`.
async function mint(target, pool, count, o) {
  const r = await wrk(target, {
    kind: 'mint', seconds: Math.max(60, count / 100), pool, quota: count,
    connections: o.connections, threads: 1,
  });
  if (r.failed) throw new Error(`minting ${count} tokens: ${r.failed}`);
  if (r.errors) throw new Error(`minting ${count} tokens: ${r.errors} errors, e.g. ${r.first_bad}`);
  if (r.minted < count) throw new Error(`minting ${count} tokens: only ${r.minted} in ${r.duration_us / 1e6} s`);
  return r.minted;
}

// ---------------------------------------------------------------- Tessera

async function startTessera(o, work, backend, dbUrl, extraEnv = {}, dbPid = null) {
  const port = await freePort();
  const adminPort = await freePort();
  const logFile = path.join(work.dir, `tessera-${backend}.log`);
  const env = {
    // The harness measures the server, not the per-client and per-address limits.
    TESSERA_RATE_LIMIT_PER_CLIENT: '0',
    TESSERA_RATE_LIMIT_PER_IP: '0',
    TESSERA_MASTER_KEY: work.masterKey,
    TESSERA_LOG: process.env.TESSERA_LOG || 'warn',
    // By environment rather than flag, so that builds without an admin listener ignore it.
    TESSERA_ADMIN_LISTEN: `127.0.0.1:${adminPort}`,
    ...extraEnv,
  };
  const child = startProcess(o.bin, ['serve', '--listen', `127.0.0.1:${port}`, '--database-url', dbUrl],
    { env, logFile, cwd: work.dir });
  const base = `http://127.0.0.1:${port}`;
  const ready = await waitHttp(`${base}/readyz`, child, logFile);
  if (!ready.ok) {
    await stopProcess(child);
    return { skipped: `Tessera did not start on ${backend} (${redact(dbUrl)}): ${ready.reason}` };
  }
  const cli = (args) => {
    const r = spawnSync(o.bin, ['--database-url', dbUrl, ...args], {
      env: { ...process.env, ...env }, cwd: work.dir, encoding: 'utf8',
    });
    if (r.status !== 0) throw new Error(`tessera ${args.join(' ')}: ${(r.stderr || '').trim()}`);
    return JSON.parse(r.stdout);
  };
  const client = (format) => {
    const c = cli(['client', 'create', '--name', `bench-${format}`, '--scope', '/ping.read', '--format', format, '--json']);
    return `Basic ${Buffer.from(`${c.client_id}:${c.client_secret}`).toString('base64')}`;
  };
  const opaqueAuth = client('opaque');
  const jwtAuth = client('jwt');
  const target = (auth) => ({
    url: base, auth, scope: '/ping.read', tokenPath: '/oauth2/token',
    introspectPath: '/oauth2/introspect', revokePath: '/oauth2/revoke', pid: () => child.pid, dbPid,
  });
  return { child, logFile, opaque: target(opaqueAuth), jwt: target(jwtAuth) };
}

function redact(url) {
  return url.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
}

// A throwaway PostgreSQL cluster on a free loopback port, unless --database-url names one.
async function postgresUrl(o, work) {
  if (o.databaseUrl) return { url: o.databaseUrl, pid: null };
  const bin = findPgBin();
  if (!bin) return { skipped: 'PostgreSQL is not installed (apt-get install -y postgresql), and no --database-url was given' };
  const dir = path.join(work.dir, 'pg');
  fs.mkdirSync(dir);
  const asPg = process.getuid && process.getuid() === 0;
  if (asPg) execFileSync('chown', ['-R', 'postgres:postgres', dir]);
  const run = (cmd, args) => {
    const full = path.join(bin, cmd);
    const r = asPg
      ? spawnSync('runuser', ['-u', 'postgres', '--', full, ...args], { encoding: 'utf8' })
      : spawnSync(full, args, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${cmd}: ${(r.stderr || r.stdout).trim().slice(0, 400)}`);
    return r.stdout;
  };
  const port = await freePort();
  run('initdb', ['-D', path.join(dir, 'data'), '-A', 'trust', '-U', 'postgres', '--no-sync']);
  // Stock settings (fsync on, synchronous_commit on, 128 MB shared buffers) but for the
  // connection limit, so that pools of several server instances fit.
  run('pg_ctl', ['-D', path.join(dir, 'data'), '-l', path.join(dir, 'log'), '-w', '-o',
    `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c max_connections=200`, 'start']);
  cleanups.push(() => run('pg_ctl', ['-D', path.join(dir, 'data'), '-m', 'fast', '-w', 'stop']));
  const pid = Number(fs.readFileSync(path.join(dir, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
  run('createdb', ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', 'tessera_bench']);
  const version = run('postgres', ['--version']).trim();
  return { url: `postgres://postgres@127.0.0.1:${port}/tessera_bench`, pid, version, port, bin, asPg };
}

function findPgBin() {
  const cands = [];
  try {
    for (const v of fs.readdirSync('/usr/lib/postgresql').sort((a, b) => Number(b) - Number(a))) {
      cands.push(`/usr/lib/postgresql/${v}/bin`);
    }
  } catch { /* none */ }
  for (const p of (process.env.PATH || '').split(':')) cands.push(p);
  return cands.find((d) => fs.existsSync(path.join(d, 'initdb')) && fs.existsSync(path.join(d, 'pg_ctl'))) || null;
}

// ---------------------------------------------------------------- workloads

// Introspection cycles over this many access tokens. Fewer than 1000, because the peer's
// default in-memory adapter is an LRU of 1000 entries and forgets older tokens.
const INTROSPECT_POOL = 500;

// Peak (closed loop, as fast as the connections go), then paced at `fraction` of that peak.
async function peakAndPaced(name, target, o, pools = {}) {
  log(`${name}: peak, ${o.duration} s`);
  const peak = await wrk(target, { ...pools.peak, seconds: o.duration, connections: o.connections, threads: o.threads });
  let paced = null;
  if (!peak.failed && peak.rps > 0) {
    const rate = Math.max(1, Math.round(peak.rps * o.fraction));
    if (pools.preparePaced) await pools.preparePaced(rate);
    log(`${name}: paced at ${rate}/s, ${o.duration} s`);
    paced = await wrk(target, { ...pools.paced, rate, seconds: o.duration, connections: o.connections, threads: o.threads });
  }
  return { name, peak, paced };
}

// A workload that cannot even be set up (a pool that could not be minted) is a failed row,
// not the end of the whole run.
async function guarded(name, fn) {
  try {
    return await fn();
  } catch (e) {
    log(`${name}: ${e.message}`);
    return { name, peak: { failed: e.message }, paced: null };
  }
}

async function tesseraWorkloads(o, work, backend, srv) {
  const rows = [];
  const want = (w) => !o.workloads || o.workloads.has(w);
  if (want('cc')) rows.push(await guarded('client_credentials (opaque)', () => peakAndPaced('client_credentials (opaque)', srv.opaque, o, { peak: { kind: 'cc' }, paced: { kind: 'cc' } })));
  if (want('jwt')) rows.push(await guarded('client_credentials (JWT)', () => peakAndPaced('client_credentials (JWT)', srv.jwt, o, { peak: { kind: 'cc' }, paced: { kind: 'cc' } })));

  const introPool = path.join(work.dir, `${backend}-introspect`);
  if (want('introspect')) rows.push(await guarded('introspection (opaque)', async () => {
    log(`introspection: minting ${INTROSPECT_POOL} opaque access tokens`);
    await mint(srv.opaque, introPool, INTROSPECT_POOL, o);
    return peakAndPaced('introspection (opaque)', srv.opaque, o,
      { peak: { kind: 'introspect', pool: introPool }, paced: { kind: 'introspect', pool: introPool } });
  }));

  // Refresh and revocation use each refresh token once: mint enough for the peak run (sized
  // from the client_credentials rate), then for the paced run (sized from the measured peak).
  const ccRate = (rows[0] && rows[0].peak.rps) || 5000;
  const cap = o.mode === 'smoke' ? 20000 : 1500000;
  for (const [kind, name] of [['refresh', 'refresh_token (opaque)'], ['revoke', 'revocation (refresh token)']]) {
    if (!want(kind)) continue;
    const peakPool = path.join(work.dir, `${backend}-${kind}-peak`);
    const pacedPool = path.join(work.dir, `${backend}-${kind}-paced`);
    // Three times what client_credentials did in a run: refresh and revocation may well be
    // faster. A pool that runs out ends the run early (and the table says so).
    const n = Math.min(cap, Math.ceil(ccRate * o.duration * 3) + 1000);
    rows.push(await guarded(name, async () => {
      log(`${kind}: minting ${n} refresh tokens`);
      await mint(srv.opaque, peakPool, n, o);
      return peakAndPaced(name, srv.opaque, o, {
        peak: { kind, pool: peakPool },
        paced: { kind, pool: pacedPool },
        preparePaced: async (rate) => {
          const m = Math.min(cap, Math.ceil(rate * o.duration * 1.2) + 1000);
          log(`${kind}: minting ${m} refresh tokens for the paced run`);
          await mint(srv.opaque, pacedPool, m, o);
        },
      });
    }));
    if (!o.keep) for (const p of [peakPool, pacedPool]) fs.rmSync(p, { force: true });
  }
  return rows;
}

async function runPeer(o, work) {
  const peerDir = path.join(here, 'peer');
  if (!fs.existsSync(path.join(peerDir, 'node_modules', 'oidc-provider'))) {
    return { skipped: 'the peer is not installed (cd bench/peer && npm ci)' };
  }
  const port = await freePort();
  const id = 'bench-peer';
  const secret = randomBytes(24).toString('base64url');
  const logFile = path.join(work.dir, 'peer.log');
  const child = startProcess(process.execPath, [path.join(peerDir, 'server.mjs')], {
    env: { PEER_PORT: String(port), PEER_CLIENT_ID: id, PEER_CLIENT_SECRET: secret, PEER_SCOPE: 'api.read', NODE_ENV: 'production' },
    logFile, cwd: peerDir,
  });
  const base = `http://127.0.0.1:${port}`;
  const ready = await waitHttp(`${base}/.well-known/openid-configuration`, child, logFile);
  if (!ready.ok) return { skipped: `the peer did not start: ${ready.reason}` };
  const version = JSON.parse(fs.readFileSync(path.join(peerDir, 'node_modules', 'oidc-provider', 'package.json'), 'utf8')).version;
  const target = {
    url: base, auth: `Basic ${Buffer.from(`${id}:${secret}`).toString('base64')}`, scope: 'api.read',
    tokenPath: '/token', introspectPath: '/token/introspection', revokePath: '/token/revocation', pid: () => child.pid,
  };
  const rows = [];
  try {
    rows.push(await guarded('client_credentials (opaque)', () => peakAndPaced('client_credentials (opaque)', target, o, { peak: { kind: 'cc' }, paced: { kind: 'cc' } })));
    const pool = path.join(work.dir, 'peer-introspect');
    rows.push(await guarded('introspection (opaque)', async () => {
      log(`peer introspection: minting ${INTROSPECT_POOL} access tokens`);
      await mint(target, pool, INTROSPECT_POOL, o);
      return peakAndPaced('introspection (opaque)', target, o,
        { peak: { kind: 'introspect', pool }, paced: { kind: 'introspect', pool } });
    }));
  } finally {
    await stopProcess(child);
  }
  return { rows, version };
}

// ---------------------------------------------------------------- reporting

const ms = (us) => (us / 1000).toFixed(2);
const statusList = (r) => Object.entries(r.statuses || {}).map(([k, v]) => `${k}: ${v}`).join(', ') || 'none';
const mib = (kib) => (kib / 1024).toFixed(0);
const int = (n) => Math.round(n).toLocaleString('en-US');

function table(title, rows, extraNote) {
  const lines = [`### ${title}`, ''];
  if (extraNote) lines.push(extraNote, '');
  lines.push('| workload | req/s (peak) | p50 ms | p99 ms | p99.9 ms | server CPU (cores) | server CPU µs/req | machine busy | paced req/s (target) | p50 ms | p99 ms | p99.9 ms | peak RSS MiB | errors |');
  lines.push('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    const p = r.peak;
    const q = r.paced;
    if (p.failed) { lines.push(`| ${r.name} | failed: ${p.failed} |`); continue; }
    const pacedCells = !q ? ['—', '—', '—', '—'] : q.failed ? [`failed: ${q.failed}`, '', '', '']
      : [`${int(q.rps)} (${int(q.targetRate)})`, ms(q.p50_us), ms(q.p99_us), ms(q.p999_us)];
    const errs = p.errors + (q && !q.failed ? q.errors : 0);
    const exhausted = p.pool_exhausted || (q && q.pool_exhausted) ? ' (token pool ran out early)' : '';
    lines.push(`| ${r.name} | ${int(p.rps)}${exhausted} | ${ms(p.p50_us)} | ${ms(p.p99_us)} | ${ms(p.p999_us)} | ${p.serverCores.toFixed(2)}${p.dbCores != null ? ` (+${p.dbCores.toFixed(2)} PostgreSQL)` : ''} | ${int(p.serverCores / p.rps * 1e6)} | ${(p.machineBusy * 100).toFixed(0)} %${p.machineSteal >= 0.005 ? ` (steal ${(p.machineSteal * 100).toFixed(0)} %)` : ''} | ${pacedCells.join(' | ')} | ${mib(Math.max(p.hwmKiB, q && !q.failed ? q.hwmKiB : 0))} | ${errs} |`);
  }
  return lines.join('\n');
}

function ratios(results, peer) {
  const lines = ['### Tessera / peer (same run)', '',
    '| workload | backend | Tessera req/s | peer req/s | ratio |', '|---|---|---:|---:|---:|'];
  for (const [backend, res] of Object.entries(results)) {
    if (!res.rows) continue;
    for (const pr of peer.rows) {
      const tr = res.rows.find((r) => r.name === pr.name);
      if (!tr || tr.peak.failed || pr.peak.failed || tr.peak.errors || pr.peak.errors) continue;
      lines.push(`| ${pr.name} | ${backend} | ${int(tr.peak.rps)} | ${int(pr.peak.rps)} | ${(tr.peak.rps / pr.peak.rps).toFixed(1)}× |`);
    }
  }
  return lines.join('\n');
}

function targets(results, peer) {
  const lines = ['### Issue 6 targets', '', '| target | measured | met |', '|---|---|---|'];
  const get = (b, n) => results[b] && results[b].rows && results[b].rows.find((r) => r.name === n);
  const add = (what, value, ok) => lines.push(`| ${what} | ${value} | ${ok ? 'yes' : '**no**'} |`);
  // A run with errors measured something else (error answers): it meets no target.
  const s = (b, n) => {
    const r = get(b, n);
    if (!r || r.peak.failed) return null;
    if (r.peak.errors > 0) { add(`${n} (${b})`, `invalid: ${r.peak.errors} errors`, false); return null; }
    return r.peak.rps;
  };
  const cc = s('sqlite', 'client_credentials (opaque)');
  if (cc != null) add('client_credentials ≥ 20,000/s (opaque, SQLite)', `${int(cc)}/s`, cc >= 20000);
  const jwt = s('sqlite', 'client_credentials (JWT)');
  if (jwt != null) add('client_credentials ≥ 15,000/s (JWT, SQLite)', `${int(jwt)}/s`, jwt >= 15000);
  const pg = s('postgres', 'client_credentials (opaque)');
  add('client_credentials ≥ 10,000/s (PostgreSQL)', pg != null ? `${int(pg)}/s` : 'not run', pg != null && pg >= 10000);
  for (const b of Object.keys(results)) {
    const i = s(b, 'introspection (opaque)');
    if (i != null) add(`introspection ≥ 40,000/s (${b})`, `${int(i)}/s`, i >= 40000);
  }
  for (const [b, res] of Object.entries(results)) {
    if (!res.rows) continue;
    const worst = res.rows.filter((r) => r.paced && !r.paced.failed && !r.paced.errors)
      .reduce((w, r) => (!w || r.paced.p99_us > w.paced.p99_us ? r : w), null);
    if (worst) add(`p99 ≤ 10 ms at 80 % of peak (${b}, worst workload)`, `${ms(worst.paced.p99_us)} ms (${worst.name})`, worst.paced.p99_us <= 10000);
    const hwm = Math.max(...res.rows.flatMap((r) => [r.peak.hwmKiB || 0, (r.paced && r.paced.hwmKiB) || 0]));
    add(`server RSS ≤ 100 MiB under load (${b})`, `${mib(hwm)} MiB peak`, hwm <= 100 * 1024);
  }
  if (peer && peer.rows) {
    for (const [b, res] of Object.entries(results)) {
      if (!res.rows) continue;
      for (const pr of peer.rows) {
        const tr = res.rows.find((r) => r.name === pr.name);
        if (!tr || tr.peak.failed || pr.peak.failed || tr.peak.errors || pr.peak.errors) continue;
        const ratio = tr.peak.rps / pr.peak.rps;
        add(`≥ 10× the peer: ${pr.name} (${b})`, `${ratio.toFixed(1)}×`, ratio >= 10);
      }
    }
  }
  return lines.join('\n');
}

function wrkVersion() {
  const r = spawnSync('wrk', ['-v'], { encoding: 'utf8' });
  return `${r.stdout || ''}${r.stderr || ''}`.trim().split('\n')[0] || '?';
}

function commandLine() {
  const a = process.argv.slice(2);
  const kept = a.filter((x, i) => x !== '--bin' && a[i - 1] !== '--bin');
  return ['bench/run', ...kept].join(' ');
}

function machineInfo(o) {
  const sh = (cmd, args) => {
    try { return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim(); } catch { return '?'; }
  };
  const lscpu = sh('lscpu', []).split('\n').filter((l) => /^(Architecture|CPU\(s\)|Model name|Thread|Core|Socket|Hypervisor|CPU MHz|L3)/.test(l)).map((l) => l.replace(/\s+/g, ' ')).join('; ');
  return [
    `- date: ${new Date().toISOString()}`,
    `- command: \`${commandLine()}\``,
    `- commit: ${sh('git', ['-C', repo, 'rev-parse', '--short', 'HEAD'])}${sh('git', ['-C', repo, 'status', '--porcelain']) ? ' (with uncommitted changes)' : ''}; binary: ${o.bin}`,
    `- machine: ${os.cpus().length} CPUs (nproc ${sh('nproc', [])}), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB; ${lscpu}`,
    `- kernel: ${os.release()}; load average at start: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`,
    `- wrk: ${wrkVersion()}; node ${process.version}; ${o.threads} wrk threads, ${o.connections} connections${o.mode === 'soak' ? '' : `, ${o.duration} s per run, paced runs at ${o.fraction * 100} % of peak`}`,
  ].join('\n');
}

// ---------------------------------------------------------------- modes

async function fullOrSmoke(o, work) {
  const header = machineInfo(o);
  const results = {};
  for (const backend of o.backends) {
    let dbUrl;
    let pgInfo = null;
    if (backend === 'sqlite') {
      dbUrl = `sqlite://${path.join(work.dir, 'bench.db')}`;
    } else {
      try { pgInfo = await postgresUrl(o, work); } catch (e) { pgInfo = { skipped: `PostgreSQL did not start: ${e.message}` }; }
      if (pgInfo.skipped) { results[backend] = { skipped: pgInfo.skipped }; log(`postgres skipped: ${pgInfo.skipped}`); continue; }
      dbUrl = pgInfo.url;
    }
    log(`${backend}: starting Tessera`);
    let srv;
    try { srv = await startTessera(o, work, backend, dbUrl, {}, pgInfo && pgInfo.pid); } catch (e) { srv = { skipped: e.message }; }
    if (srv.skipped) { results[backend] = { skipped: srv.skipped }; log(`${backend} skipped: ${srv.skipped}`); continue; }
    try {
      results[backend] = { rows: await tesseraWorkloads(o, work, backend, srv), pg: pgInfo };
    } finally {
      await stopProcess(srv.child);
    }
  }
  let peer = null;
  if (o.peer) {
    log('peer: starting node-oidc-provider');
    peer = await runPeer(o, work);
    if (peer.skipped) log(`peer skipped: ${peer.skipped}`);
  }

  const out = [`## Results (${o.mode === 'smoke' ? 'smoke test' : 'full run'})`, '', header, ''];
  for (const [backend, res] of Object.entries(results)) {
    if (res.skipped) { out.push(`### Tessera on ${backend}`, '', `Skipped: ${res.skipped}`, ''); continue; }
    out.push(table(`Tessera on ${backend}`, res.rows, res.pg && res.pg.version ? `${res.pg.version}, throwaway cluster with stock durability settings` : null), '');
  }
  if (peer && peer.rows) {
    out.push(table(`Peer: node-oidc-provider ${peer.version} (in-memory, single Node process)`, peer.rows), '');
    out.push(ratios(results, peer), '');
  } else if (peer) {
    out.push('### Peer', '', `Skipped: ${peer.skipped}`, '');
  }
  if (o.mode === 'full') out.push(targets(results, peer), '');
  const text = out.join('\n');
  process.stdout.write(`${text}\n`);
  saveResults(o, text, { results, peer });

  // The verdict: every run that happened produced numbers and no errors.
  const problems = [];
  const check = (who, rows) => {
    for (const r of rows) {
      for (const [phase, x] of [['peak', r.peak], ['paced', r.paced]]) {
        if (!x) { problems.push(`${who} ${r.name} ${phase}: not run`); continue; }
        if (x.failed) { problems.push(`${who} ${r.name} ${phase}: ${x.failed}`); continue; }
        if (!(x.requests > 0) || !(x.rps > 0)) problems.push(`${who} ${r.name} ${phase}: no requests`);
        if (x.errors > 0) problems.push(`${who} ${r.name} ${phase}: ${x.errors} errors (statuses ${statusList(x)}; e.g. ${x.first_bad || 'socket errors'})`);
      }
    }
  };
  for (const [backend, res] of Object.entries(results)) if (res.rows) check(`tessera/${backend}`, res.rows);
  if (peer && peer.rows) check('peer', peer.rows);
  if (!Object.values(results).some((r) => r.rows)) problems.push('no backend ran');
  if (problems.length) {
    process.stderr.write(`bench: FAILED\n${problems.map((p) => `  - ${p}`).join('\n')}\n`);
    return 1;
  }
  if (o.mode === 'smoke') process.stderr.write('bench: smoke test passed: every workload produced numbers and no errors\n');
  return 0;
}

async function soak(o, work) {
  const header = machineInfo(o);
  const backend = o.backends[0];
  let dbUrl;
  let pg = null;
  if (backend === 'sqlite') {
    dbUrl = `sqlite://${path.join(work.dir, 'soak.db')}`;
  } else {
    pg = await postgresUrl(o, work);
    if (pg.skipped) { log(`soak skipped: ${pg.skipped}`); return 1; }
    dbUrl = pg.url;
  }
  // Short lifetimes and a short cleanup interval, so that tokens expire and are deleted
  // many times over during the soak; audit events kept 2 minutes (the default keeps them 90
  // days, which under this load is the largest part of the database; see BENCHMARKS.md).
  const soakEnv = {
    TESSERA_ACCESS_TTL: '60', TESSERA_REFRESH_TTL: '120', TESSERA_CLEANUP_INTERVAL: '5',
    TESSERA_AUDIT_RETENTION: '120',
  };
  const srv = await startTessera(o, work, backend, dbUrl, soakEnv, pg && pg.pid);
  if (srv.skipped) { log(`soak skipped: ${srv.skipped}`); return 1; }
  const dbFile = backend === 'sqlite' ? dbUrl.replace(/^sqlite:\/\//, '') : null;
  const dbSize = () => {
    if (dbFile) {
      const sz = (f) => { try { return fs.statSync(f).size; } catch { return 0; } };
      return { main: sz(dbFile), wal: sz(`${dbFile}-wal`) };
    }
    const r = spawnSync('psql', [pg.url, '-Atc', 'select pg_database_size(current_database())'], { encoding: 'utf8' });
    return { main: Number(r.stdout.trim()) || 0, wal: 0 };
  };
  const samples = [];
  const t0 = Date.now();
  const sample = () => {
    const m = procMem(srv.child.pid);
    const d = dbSize();
    const s = { t: Math.round((Date.now() - t0) / 1000), rssKiB: m.rssKiB, hwmKiB: m.hwmKiB, ...d };
    samples.push(s);
    log(`soak t=${s.t}s rss=${mib(s.rssKiB)} MiB db=${(s.main / 2 ** 20).toFixed(1)} MiB wal=${(s.wal / 2 ** 20).toFixed(1)} MiB`);
  };
  sample();
  const timer = setInterval(sample, o.sample * 1000);
  log(`soak: ${o.soakDuration} s of mixed load (40 % issue, 30 % refresh, 20 % introspect, 10 % revoke) on ${backend}`);
  let r;
  try {
    r = await wrk(srv.opaque, { kind: 'mixed', seconds: o.soakDuration, connections: o.connections, threads: o.threads });
  } finally {
    clearInterval(timer);
  }
  sample();
  await stopProcess(srv.child);
  const lines = [`## Soak (${o.soakDuration} s, ${backend})`, '', header,
    `- settings: ${Object.entries(soakEnv).map(([k, v]) => `${k}=${v}`).join(' ')}`, ''];
  if (r.failed) {
    lines.push(`wrk failed: ${r.failed}`);
  } else {
    lines.push(`Mixed load: ${int(r.requests)} requests, ${int(r.rps)} req/s, p50 ${ms(r.p50_us)} ms, p99 ${ms(r.p99_us)} ms, p99.9 ${ms(r.p999_us)} ms, server CPU ${r.serverCores.toFixed(2)} cores${r.dbCores != null ? ` (+${r.dbCores.toFixed(2)} PostgreSQL)` : ''}, errors ${r.errors}${r.first_bad ? ` (e.g. ${r.first_bad})` : ''}; responses by status: ${statusList(r)}.`, '');
  }
  lines.push(`| t (s) | server RSS MiB | peak RSS MiB | database MiB | WAL MiB |`, '|---:|---:|---:|---:|---:|');
  for (const s of samples) {
    lines.push(`| ${s.t} | ${mib(s.rssKiB)} | ${mib(s.hwmKiB)} | ${(s.main / 2 ** 20).toFixed(1)} | ${dbFile ? (s.wal / 2 ** 20).toFixed(1) : '—'} |`);
  }
  const text = lines.join('\n');
  process.stdout.write(`${text}\n`);
  saveResults(o, text, { soak: r, samples });
  return r.failed || r.errors ? 1 : 0;
}

function saveResults(o, text, data) {
  const dir = path.join(here, 'results');
  fs.mkdirSync(dir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  fs.writeFileSync(path.join(dir, `${stamp}-${o.mode}.md`), `${text}\n`);
  fs.writeFileSync(path.join(dir, `${stamp}-${o.mode}.json`), JSON.stringify(data, null, 2));
  log(`results saved in bench/results/${stamp}-${o.mode}.{md,json}`);
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-bench-'));
  if (process.getuid && process.getuid() === 0) fs.chmodSync(dir, 0o755);
  const work = { dir, masterKey: randomBytes(32).toString('base64') };
  if (!o.keep) cleanups.unshift(() => fs.rmSync(dir, { recursive: true, force: true }));
  else log(`work directory: ${dir}`);
  const code = o.mode === 'soak' ? await soak(o, work) : await fullOrSmoke(o, work);
  cleanupAll();
  process.exit(code);
}

main().catch((e) => { process.stderr.write(`bench: ${e.stack || e}\n`); cleanupAll(); process.exit(1); });
