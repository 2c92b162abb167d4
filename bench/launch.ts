/**
 * Launch overhead on the local provider, with a trivial agent.
 *
 *   npm run bench                 # N=1 and N=20, three rounds each
 *   npm run bench -- 1 5 20 50    # other sizes
 *
 * For each round it launches N thopters at once through the API and waits until all are running.
 * It prints the wall time for the whole batch, and per thopter the time from acceptance to
 * running split into the phases' own work and the hub's overhead (queueing, job hand-offs,
 * record writes): overhead = (runningAt - createdAt) - sum(phase durations).
 */
import { readFileSync } from 'node:fs';
import { api, TestWorld } from '../test/helpers/env.js';
import { waitFor } from '../test/helpers/wait.js';

const sizes = process.argv
  .slice(2)
  .map(Number)
  .filter((n) => n > 0);
const SIZES = sizes.length ? sizes : [1, 20];
const ROUNDS = 3;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const ms = (n: number) => `${Math.round(n)} ms`;

/** CPU of finished child processes (git, tar, the tmux client...), from /proc: ms. */
function childCpuMs(): number {
  const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1]!.split(' ');
  // After "pid (comm) ", cutime and cstime are fields 14 and 15 (0-based 13, 14), in clock ticks.
  return ((Number(fields[13]) + Number(fields[14])) * 1000) / 100;
}

/** All cores' busy and total jiffies since boot, from /proc/stat. */
function machineCpu(): { busy: number; total: number } {
  const [, ...fields] = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/);
  const n = fields.map(Number);
  const total = n.reduce((a, b) => a + b, 0);
  const idle = (n[3] ?? 0) + (n[4] ?? 0);
  return { busy: total - idle, total };
}

async function main() {
  const world = await new TestWorld().start();
  const origin = world.origin();
  const hub = await world.hub({
    MAX_THOPTERS: String(Math.max(...SIZES)),
    // An agent that stays, as launch-agent wants; a short settle keeps the figures about provisioning.
    THOPTER_AGENT_COMMAND: 'sleep 600',
    THOPTER_AGENT_SETTLE: '100ms',
    THOPTER_STATUS_INTERVAL: '3s',
  });
  const rows: string[] = [];
  try {
    for (const n of SIZES) {
      for (let round = 1; round <= ROUNDS; round++) {
        const started = performance.now();
        const cpuBefore = process.cpuUsage();
        const childrenBefore = childCpuMs();
        const machineBefore = machineCpu();
        const ids = await Promise.all(
          Array.from({ length: n }, (_, i) =>
            api(hub.url, 'POST', '/api/thopters', { repository: origin, title: `bench ${i}` }).then(
              (r) => r.body.id as string,
            ),
          ),
        );
        const records = await waitFor(
          `${n} running`,
          async () => {
            const all = await Promise.all(ids.map((id) => hub.store.get(id)));
            return all.every((r) => r?.state === 'running') ? all.map((r) => r!) : undefined;
          },
          { timeoutMs: 300_000, intervalMs: 20 },
        );
        const wall = performance.now() - started;
        const cpu = process.cpuUsage(cpuBefore);
        const hubCpu = (cpu.user + cpu.system) / 1000 / n;
        const childCpu = (childCpuMs() - childrenBefore) / n;
        const machineAfter = machineCpu();
        const busy =
          (100 * (machineAfter.busy - machineBefore.busy)) / (machineAfter.total - machineBefore.total);
        const total = records.map((r) => Date.parse(r.runningAt!) - Date.parse(r.createdAt));
        const work = records.map((r) =>
          Object.values(r.phases).reduce(
            (s, p) => s + (p?.endedAt ? Date.parse(p.endedAt) - Date.parse(p.startedAt) : 0),
            0,
          ),
        );
        const overhead = total.map((t, i) => t - work[i]!);
        const destroyStarted = performance.now();
        await Promise.all(ids.map((id) => api(hub.url, 'DELETE', `/api/thopters/${id}`)));
        await waitFor(
          `${n} destroyed`,
          async () => {
            const states = await Promise.all(ids.map((id) => hub.store.state(id)));
            return states.every((s) => s === 'destroyed');
          },
          { timeoutMs: 300_000, intervalMs: 20 },
        );
        const destroyWall = performance.now() - destroyStarted;
        const row = `| ${n} | ${round} | ${ms(wall)} | ${ms(median(total))} | ${ms(median(work))} | ${ms(median(overhead))} | ${ms(Math.max(...overhead))} | ${ms(hubCpu)} | ${ms(childCpu)} | ${Math.round(busy)}% | ${ms(destroyWall)} |`;
        rows.push(row);
        console.log(row);
      }
    }
  } finally {
    await world.close();
  }
  console.log(
    '\n| N | round | wall time to all running | median accept→running | median phase work | median hub overhead | max hub overhead | hub CPU per thopter | phase processes CPU per thopter | machine CPU busy | wall time to all destroyed |',
  );
  console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
  for (const r of rows) console.log(r);
}

void main().catch((err) => {
  console.error(err);
  process.exit(1);
});
