/**
 * Stopping the hub with a group signal, and recovering from a killed embedded redis-server.
 *
 *   node --import tsx bench/shutdown.ts            # 30 running thopters, 5 rounds of each
 *   node --import tsx bench/shutdown.ts 10 3       # 10 thopters, 3 rounds
 *
 * Each round starts the real hub (src/main.ts) on its embedded Redis, leading a process group of its
 * own as under a terminal, launches N thopters and waits until they run. Then either:
 * - `idle`: SIGINT to the whole group, as Ctrl-C does; or
 * - `launching`: N more launches accepted (slots free: MAX_THOPTERS is 2N), and the group SIGINT
 *   while they provision;
 * and prints how long the hub took to exit and its exit code (a hub that has not exited after 60 s
 * counts as hung). Last, `kill -9` of the embedded redis-server: how long until /health is 200
 * again and the API lists the thopters.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { api, freePort, ROOT, TestWorld } from '../test/helpers/env.js';
import { waitFor } from '../test/helpers/wait.js';

const N = Number(process.argv[2] ?? 30);
const ROUNDS = Number(process.argv[3] ?? 5);
const HUNG_AFTER_MS = 60_000;

const world = await new TestWorld().start();
const origin = world.origin();

async function startHub(dataDir: string): Promise<{ child: ChildProcess; url: string }> {
  const port = await freePort();
  const env = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '/root',
    ...world.env({
      REDIS_URL: '',
      DATA_DIR: dataDir,
      HUB_PORT: String(port),
      MAX_THOPTERS: String(2 * N),
      THOPTER_STATUS_INTERVAL: '3s',
    }),
  };
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/main.ts')], {
    env,
    cwd: ROOT,
    stdio: 'ignore',
    detached: true,
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor('the hub', async () => (await fetch(`${url}/health`).catch(() => null))?.ok, {
    timeoutMs: 60_000,
  });
  return { child, url };
}

const launchAll = (url: string, label: string) =>
  Promise.all(
    Array.from({ length: N }, (_, i) =>
      api(url, 'POST', '/api/thopters', { repository: origin, title: `${label} ${i}` }).then(
        (r) => r.body.id,
      ),
    ),
  );

async function allRunning(url: string, ids: string[]) {
  await waitFor(
    'all running',
    async () => {
      const list = (await api(url, 'GET', '/api/thopters?state=running&limit=1000')).body.thopters;
      return ids.every((id) => list.some((t: { id: string }) => t.id === id));
    },
    { timeoutMs: 300_000, intervalMs: 250 },
  );
}

/** Ends what a round left: the hub's group, redis-server, every thopter's tmux server. */
function cleanUp(dataDir: string, hub: ChildProcess) {
  try {
    process.kill(-hub.pid!, 'SIGKILL');
  } catch {
    // exited
  }
  try {
    process.kill(Number(readFileSync(path.join(dataDir, 'redis', 'redis.pid'), 'utf8')), 'SIGKILL');
  } catch {
    // stopped
  }
  try {
    for (const id of readdirSync(path.join(dataDir, 'thopters'))) {
      execFileSync('tmux', ['kill-server'], {
        env: { ...process.env, TMUX_TMPDIR: path.join(dataDir, 'thopters', id, 'tmux') },
        stdio: 'ignore',
      });
    }
  } catch {
    // no machines
  }
  rmSync(dataDir, { recursive: true, force: true });
}

const rows: string[] = [];
for (const mode of ['idle', 'launching'] as const) {
  for (let round = 1; round <= ROUNDS; round++) {
    const dataDir = path.join(world.dir, `${mode}-${round}`);
    const hub = await startHub(dataDir);
    try {
      await allRunning(hub.url, await launchAll(hub.url, mode));
      const exited = new Promise<number | null>((resolve) => hub.child.once('exit', (code) => resolve(code)));
      if (mode === 'launching') await launchAll(hub.url, 'in flight');
      const t0 = performance.now();
      process.kill(-hub.child.pid!, 'SIGINT');
      const code = await Promise.race([exited, new Promise((r) => setTimeout(r, HUNG_AFTER_MS, 'hung'))]);
      const took = performance.now() - t0;
      rows.push(
        `| ${mode} | ${N} | ${round} | ${code === 'hung' ? 'hung' : `${Math.round(took)} ms`} | ${code} |`,
      );
      console.log(rows.at(-1));
    } finally {
      cleanUp(dataDir, hub.child);
    }
  }
}

const restarts: string[] = [];
{
  const dataDir = path.join(world.dir, 'redis-kill');
  const hub = await startHub(dataDir);
  try {
    const ids = await launchAll(hub.url, 'kill');
    await allRunning(hub.url, ids);
    for (let round = 1; round <= ROUNDS; round++) {
      const pid = Number(readFileSync(path.join(dataDir, 'redis', 'redis.pid'), 'utf8'));
      const t0 = performance.now();
      process.kill(pid, 'SIGKILL');
      await waitFor('/health down', async () => (await fetch(`${hub.url}/health`)).status === 503, {
        intervalMs: 5,
      }).catch(() => undefined);
      await waitFor('/health 200', async () => (await fetch(`${hub.url}/health`)).ok, { intervalMs: 20 });
      const health = performance.now() - t0;
      const listed = await waitFor(
        'the API lists every thopter',
        async () => (await api(hub.url, 'GET', '/api/thopters?limit=1000')).body?.thopters?.length === N,
        { intervalMs: 20 },
      ).then(
        () => `${Math.round(performance.now() - t0)} ms`,
        () => 'not within 60 s',
      );
      restarts.push(`| ${N} | ${round} | ${Math.round(health)} ms | ${listed} |`);
      console.log(restarts.at(-1));
      // Nothing brings this Redis back: the next rounds would measure nothing.
      if (listed.startsWith('not')) break;
    }
  } finally {
    cleanUp(dataDir, hub.child);
  }
}

console.log('\n| mode | running thopters | round | group SIGINT → exit | exit code |');
console.log('| --- | --- | --- | --- | --- |');
for (const r of rows) console.log(r);
console.log('\n| running thopters | round | kill -9 → /health 200 | kill -9 → API lists all |');
console.log('| --- | --- | --- | --- |');
for (const r of restarts) console.log(r);
await world.close();
process.exit(0);
