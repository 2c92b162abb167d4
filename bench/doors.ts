/**
 * What a flood of unauthenticated posts costs the hub in memory (issue 11, items 2 and 5).
 *
 *   node --import tsx bench/doors.ts
 *   BENCH_POSTS=200 BENCH_BODY_KB=2048 node --import tsx bench/doors.ts
 *
 * The hub runs in its own process (src/main.ts, embedded in a TestWorld with a real redis-server);
 * its resident memory (VmRSS from /proc) is sampled every 50 ms. Three bursts of BENCH_POSTS
 * concurrent posts, each on its own connection, each declaring and sending a BENCH_BODY_KB body:
 *   1. unsigned webhook deliveries (no X-Hub-Signature-256),
 *   2. webhook deliveries with a signature header that signs nothing (the hub must read them to
 *      know), of 900 kB: under the hub's 1 MB limit for deliveries,
 *   3. observer status posts with a wrong bearer (512 kB bodies, the API's limit).
 * Printed per burst: RSS before, the peak during, RSS 3 s after, and how the posts were answered.
 */
import { readFileSync } from 'node:fs';
import { request } from 'node:http';
import { TestWorld } from '../test/helpers/env.js';

const POSTS = Number(process.env.BENCH_POSTS ?? 400);
const BODY_KB = Number(process.env.BENCH_BODY_KB ?? 4096);
const SECRET = 'bench-webhook-secret';

const rssMb = (pid: number) =>
  Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;

/** One post on its own connection; resolves with its status, or how the connection ended. */
function post(url: string, path: string, headers: Record<string, string>, size: number): Promise<string> {
  return new Promise((resolve) => {
    const req = request(`${url}${path}`, {
      method: 'POST',
      agent: false,
      headers: { 'content-type': 'application/json', 'content-length': String(size), ...headers },
    });
    let settled = false;
    const done = (what: string) => {
      if (settled) return;
      settled = true;
      req.destroy();
      resolve(what);
    };
    req.on('response', (res) => {
      res.resume();
      done(String(res.statusCode));
    });
    req.on('error', (err) => done((err as NodeJS.ErrnoException).code ?? 'error'));
    const chunk = Buffer.alloc(64 * 1024, 0x20);
    let sent = 0;
    const pump = () => {
      while (sent < size && !settled) {
        const n = Math.min(chunk.length, size - sent);
        sent += n;
        if (!req.write(n === chunk.length ? chunk : chunk.subarray(0, n)))
          return void req.once('drain', pump);
      }
      if (!settled) req.end();
    };
    pump();
  });
}

async function burst(
  pid: number,
  name: string,
  send: () => Promise<string>,
): Promise<Record<string, string | number>> {
  const before = rssMb(pid);
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, rssMb(pid))), 50);
  const outcomes = await Promise.all(Array.from({ length: POSTS }, send));
  clearInterval(sampler);
  peak = Math.max(peak, rssMb(pid));
  await new Promise((r) => setTimeout(r, 3000));
  const counts: Record<string, number> = {};
  for (const o of outcomes) counts[o] = (counts[o] ?? 0) + 1;
  return {
    burst: name,
    'rss before (MB)': Math.round(before),
    'peak (MB)': Math.round(peak),
    'after 3 s (MB)': Math.round(rssMb(pid)),
    answers: Object.entries(counts)
      .map(([k, v]) => `${v}× ${k}`)
      .join(', '),
  };
}

const world = await new TestWorld().start();
try {
  const { child, url } = await world.spawnHub({ GITHUB_WEBHOOK_SECRET: SECRET, LOG_LEVEL: 'error' });
  const pid = child.pid!;
  await new Promise((r) => setTimeout(r, 2000));
  const size = BODY_KB * 1024;
  const rows = [
    await burst(pid, `${POSTS} unsigned webhook posts of ${BODY_KB} kB`, () =>
      post(url, '/github/webhook', { 'x-github-event': 'issues' }, size),
    ),
    await burst(pid, `${POSTS} webhook posts with a bad signature, 900 kB`, () =>
      post(
        url,
        '/github/webhook',
        { 'x-github-event': 'issues', 'x-hub-signature-256': `sha256=${'0'.repeat(64)}` },
        900 * 1024,
      ),
    ),
    await burst(pid, `${POSTS} status posts with a wrong bearer, 512 kB`, () =>
      post(
        url,
        '/api/thopters/thopter-0123456789ab/status',
        { authorization: 'Bearer not-this-thopters-token' },
        512 * 1024,
      ),
    ),
  ];
  console.table(rows);
} finally {
  await world.close();
}
