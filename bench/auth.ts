/**
 * What the wrong-token limit costs and what it holds back.
 *
 *   node --import tsx bench/auth.ts [seconds per phase, default 5]
 *
 * One in-process hub with the default HUB_AUTH_FAILURE_LIMIT (10:200). Each phase runs for a few
 * seconds with 16 requests in flight per client, over keep-alive connections bound to their own
 * loopback address (the hub sees each as a client):
 *   1. the right token alone from 127.0.0.1 (GET /api/intake): what a script sees;
 *   2. the same while 127.0.0.2 sends wrong bearer tokens as fast as it can;
 *   3. wrong sign-ins at POST /login from 127.0.0.3.
 * It prints requests a second, latency and the statuses each client got.
 */
import { Agent, request } from 'node:http';
import { TestWorld, TOKEN } from '../test/helpers/env.js';

const SECONDS = Number(process.argv[2]) > 0 ? Number(process.argv[2]) : 5;
const IN_FLIGHT = 16;

interface Tally {
  statuses: Map<number, number>;
  latencies: number[];
}

function call(
  agent: Agent,
  url: string,
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: string,
) {
  return new Promise<number>((resolve, reject) => {
    const req = request(`${url}${path}`, { agent, method, headers }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode!));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Keeps IN_FLIGHT requests going from `from` until `until`. */
async function drive(from: string, until: number, make: (agent: Agent) => Promise<number>): Promise<Tally> {
  const agent = new Agent({ keepAlive: true, maxSockets: IN_FLIGHT, localAddress: from });
  const tally: Tally = { statuses: new Map(), latencies: [] };
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (performance.now() < until) {
        const started = performance.now();
        const status = await make(agent);
        tally.latencies.push(performance.now() - started);
        tally.statuses.set(status, (tally.statuses.get(status) ?? 0) + 1);
      }
    }),
  );
  agent.destroy();
  return tally;
}

function row(phase: string, client: string, t: Tally) {
  const sorted = [...t.latencies].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
  const statuses = [...t.statuses].sort(([a], [b]) => a - b).map(([s, n]) => `${s}: ${n}`);
  return `| ${phase} | ${client} | ${Math.round(t.latencies.length / SECONDS)} | ${at(0.5).toFixed(2)} ms | ${at(0.99).toFixed(2)} ms | ${statuses.join(', ')} |`;
}

async function main() {
  const world = await new TestWorld().start();
  const hub = await world.hub();
  const rows: string[] = [];
  const right = (agent: Agent) =>
    call(agent, hub.url, 'GET', '/api/intake', { authorization: `Bearer ${TOKEN}` });
  const wrong = (agent: Agent) =>
    call(agent, hub.url, 'GET', '/api/intake', { authorization: 'Bearer a-wrong-guess-0f3e9d1c7b' });
  const signIn = (agent: Agent) =>
    call(
      agent,
      hub.url,
      'POST',
      '/login',
      { 'content-type': 'application/x-www-form-urlencoded' },
      'token=a-wrong-guess-0f3e9d1c7b&next=%2F',
    );
  try {
    let until = performance.now() + SECONDS * 1000;
    rows.push(row('right token alone', '127.0.0.1', await drive('127.0.0.1', until, right)));
    until = performance.now() + SECONDS * 1000;
    const [legit, guesser] = await Promise.all([
      drive('127.0.0.1', until, right),
      drive('127.0.0.2', until, wrong),
    ]);
    rows.push(row('right token, under a flood', '127.0.0.1', legit));
    rows.push(row('wrong bearer tokens', '127.0.0.2', guesser));
    until = performance.now() + SECONDS * 1000;
    rows.push(row('wrong sign-ins', '127.0.0.3', await drive('127.0.0.3', until, signIn)));
  } finally {
    await world.close();
  }
  console.log(`${SECONDS} s per phase, ${IN_FLIGHT} requests in flight per client\n`);
  console.log('| phase | client | requests/s | p50 | p99 | statuses |');
  console.log('| --- | --- | --- | --- | --- | --- |');
  for (const r of rows) console.log(r);
}

await main();
