/**
 * Concurrent provisions on THOPTER_PROVIDER=fly, against the fake Fly API (machines that take
 * BENCH_BOOT_MS to boot, 2 s by default) with a real sshd per machine (test/helpers/machine-host.ts).
 * Needs root, like the Fly tests.
 *
 *   node --import tsx bench/fly-provision.ts            # N=1, then N=50 twice
 *   node --import tsx bench/fly-provision.ts 1 10 50    # other sizes
 *   BENCH_FLY_RATE=off node --import tsx bench/fly-provision.ts
 *
 * BENCH_FLY_RATE sets both the hub's FLY_API_RATE and the fake's limits ("1:3", Fly's documented
 * per-action budget, by default; "off" for none), so the hub's own scaling can be told apart from
 * the API's budget. For each N it prints the wall time until all are running (and its ratio to
 * N=1), SSH logins per provision counted by the machines' sshd, Fly API requests per provision,
 * and the hub process's CPU per provision (the hub runs in its own process; the fakes here).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { startFakeFly } from '../test/fakes/fly.js';
import { api, freePort, TestWorld } from '../test/helpers/env.js';
import { GitHttpServer } from '../test/helpers/git-http.js';
import { MachineHost } from '../test/helpers/machine-host.js';
import { waitFor } from '../test/helpers/wait.js';

const sizes = process.argv
  .slice(2)
  .map(Number)
  .filter((n) => n > 0);
// 50 twice: first with no free volume (each provision creates one), then with the pool warm.
const SIZES = sizes.length ? sizes : [1, 50, 50];
const BOOT_MS = Number(process.env.BENCH_BOOT_MS ?? 2000);
const RATE = process.env.BENCH_FLY_RATE ?? '1:3';
const TOKEN = 'fly_bench_token_0123456789';

/** utime + stime of a process, ms (from /proc; clock ticks are 100 a second on Linux). */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

async function main() {
  if (process.getuid?.() !== 0) throw new Error('run as root: the machines are sshd in namespaces');
  const world = await new TestWorld().start();
  const root = path.join(world.dir, 'git');
  mkdirSync(root, { recursive: true });
  execFileSync('git', ['clone', '-q', '--bare', world.origin('widget'), path.join(root, 'widget.git')]);
  const git = await new GitHttpServer(root, undefined).start();
  const sshPort = await freePort();
  const host = new MachineHost({ port: sshPort, baseDir: path.join(world.dir, 'machines') });
  const [perSecond, burst] = RATE.split(':').map(Number);
  const fly = await startFakeFly({
    tokens: [TOKEN],
    bootMs: BOOT_MS,
    rateLimit: RATE === 'off' ? false : { perSecond: perSecond!, burst: burst! },
    onStart: (m) => host.boot(m),
    onStop: (m) => host.stop(m.id),
  });
  const hub = await world.spawnHub({
    THOPTER_PROVIDER: 'fly',
    FLY_API_URL: fly.url,
    FLY_API_TOKEN: TOKEN,
    FLY_API_RATE: RATE,
    APP_NAME: 'thopters',
    REGION: 'ord',
    THOPTER_IMAGE: 'registry.fly.io/thopters:bench',
    THOPTER_SSH_HOST: '{private_ip}',
    THOPTER_SSH_PORT: String(sshPort),
    // An agent that stays, as launch-agent wants; a short settle keeps the figures about provisioning.
    THOPTER_AGENT_COMMAND: 'sleep 600',
    THOPTER_AGENT_SETTLE: '100ms',
    MAX_THOPTERS: String(Math.max(...SIZES)),
    LOG_LEVEL: 'warn',
  });
  const rows: string[] = [];
  let alone = 0;
  try {
    for (const n of SIZES) {
      const freeVolumes = fly.volumes().filter((v) => !v.attached_machine_id).length;
      const requestsBefore = fly.requests.length;
      const cpuBefore = cpuMs(hub.child.pid!);
      const started = performance.now();
      const ids = await Promise.all(
        Array.from({ length: n }, (_, i) =>
          api(hub.url, 'POST', '/api/thopters', {
            repository: `${git.url}/widget.git`,
            title: `bench ${n}/${i}`,
          }).then((r) => (r.body as { id: string }).id),
        ),
      );
      await waitFor(
        `${n} thopters to run`,
        async () => {
          const states = await Promise.all(
            ids.map(async (id) => {
              const body = (await api(hub.url, 'GET', `/api/thopters/${id}`)).body as { state: string };
              if (body.state === 'failed') throw new Error(`${id} failed: ${JSON.stringify(body)}`);
              return body.state;
            }),
          );
          return states.every((s) => s === 'running');
        },
        { timeoutMs: 30 * 60_000, intervalMs: 250 },
      );
      const wall = performance.now() - started;
      const records = await Promise.all(
        ids.map(
          async (id) =>
            (await api(hub.url, 'GET', `/api/thopters/${id}`)).body as {
              phases: { name: string; startedAt: string; endedAt?: string }[];
            },
        ),
      );
      const phaseMedians = records[0]!.phases.map(({ name }) => {
        const ds = records
          .map((r) => r.phases.find((p) => p.name === name))
          .filter((p) => p?.endedAt)
          .map((p) => Date.parse(p!.endedAt!) - Date.parse(p!.startedAt))
          .sort((a, b) => a - b);
        return `${name} ${ds[Math.floor(ds.length / 2)]} ms`;
      });
      console.log(`N=${n} median phase durations: ${phaseMedians.join(', ')}`);
      const cpu = cpuMs(hub.child.pid!) - cpuBefore;
      const machines = fly.machines().filter((m) => ids.includes(m.config.metadata?.thopter_id ?? ''));
      const logins = machines.reduce((sum, m) => sum + host.logins(m.id), 0);
      const requests = fly.requests.length - requestsBefore;
      const limited = fly.requests.slice(requestsBefore).filter((r) => r.status === 429).length;
      if (n === 1) alone = wall;
      rows.push(
        `| ${n} | ${freeVolumes} | ${BOOT_MS} ms | ${RATE} | ${(wall / 1000).toFixed(1)} s | ${alone ? `${(wall / alone).toFixed(2)}x` : '-'} | ${(logins / n).toFixed(2)} | ${(requests / n).toFixed(1)} | ${limited} | ${Math.round(cpu / n)} ms |`,
      );
      console.log(rows.at(-1));
      await Promise.all(ids.map((id) => api(hub.url, 'DELETE', `/api/thopters/${id}`)));
      await waitFor(
        'every machine to be deleted',
        () =>
          fly
            .machines()
            .every((m) => m.state === 'destroyed' || !ids.includes(m.config.metadata?.thopter_id ?? '')),
        { timeoutMs: 30 * 60_000, intervalMs: 250 },
      );
    }
  } finally {
    await world.closeHubs();
    await fly.close();
    await host.stopAll();
    await git.close();
    await world.close();
  }
  console.log(
    '\n| N | free volumes | boot | FLY_API_RATE | wall time to all running | vs N=1 | SSH logins per provision | Fly API requests per provision | 429s | hub CPU per provision |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const r of rows) console.log(r);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
