/**
 * Status ingest at the hub: what observers posting every 3 s cost the hub.
 *
 *   node --import tsx bench/status-ingest.ts               # 1000 thopters; 333, 1000, 2000 posts/s
 *   node --import tsx bench/status-ingest.ts 333 666       # other rates
 *   BENCH_THOPTERS=200 BENCH_SECONDS=10 node --import tsx bench/status-ingest.ts
 *
 * The hub runs in a child process (its CPU read from /proc, apart from the load generator's),
 * with a real redis-server and a stand-in provider that plays Fly: `hubObserves` is false, its
 * machines answer every command at once, and each machine's status token is written to a file
 * as a real machine receives it. BENCH_THOPTERS thopters are launched through the API and run
 * their real lifecycle jobs, which wake at every change of their record, status posts included,
 * as they do in production. Then each rate is held for BENCH_SECONDS (after a 3 s warm-up) by an
 * open-loop generator on loopback: every thopter has its own keep-alive connection, as each
 * observer does, and posts a realistic body (a 2–4 kB screen of agent output that changes at
 * half the posts). The hub's idle CPU with the same thopters and no posts is measured first.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/config.js';
import { startHub } from '../src/hub.js';
import { createLogger } from '../src/log.js';
import type {
  ExecResult,
  GoldenClaude,
  GoldenClaudeInfo,
  MachineInfo,
  MachineSpec,
  Provider,
  SessionSnapshot,
  Transport,
} from '../src/providers/types.js';
import { statusPostSchema, type StatusPost } from '../src/status/schema.js';
import { ThopterStore } from '../src/thopters/store.js';
import { api, freePort, TestWorld } from '../test/helpers/env.js';
import { waitFor } from '../test/helpers/wait.js';

const THIS_FILE = fileURLToPath(import.meta.url);
const THOPTERS = Number(process.env.BENCH_THOPTERS ?? 1000);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 20);
const WARM_MS = 3000;
/** A folder: the hub writes a CPU profile of each measured window there (hub-1.cpuprofile, ...). */
const PROFILE = process.env.BENCH_HUB_PROFILE;
const rates = process.argv
  .slice(2)
  .map(Number)
  .filter((n) => n > 0);
const RATES = rates.length ? rates : [Math.round(THOPTERS / 3), 1000, 2000];

// ---------------------------------------------------------------------------------------------
// The hub's side (BENCH_ROLE=hub): a hub whose provider stands in for Fly.

const PATHS = {
  home: '/data/thopter',
  workspace: '/data/thopter/workspace',
  log: '/thopter/log',
  ready: '/thopter/ready',
};
const ok: ExecResult = { exitCode: 0, stdout: '', stderr: '' };

/** A machine that does at once whatever it is asked. */
const standInTransport: Transport = {
  paths: PATHS,
  isOpen: true,
  exec: async () => ok,
  open: async () => {
    throw new Error('no interactive commands on a stand-in machine');
  },
  writeFile: async () => {},
  appendFile: async () => {},
  // Only post-checkout asks: no operator script here.
  exists: async () => false,
  readFile: async () => Buffer.alloc(0),
  close: async () => {},
};

/** Fly as the hub sees it (an observer reports each session), with machines that cost nothing. */
class StandInProvider implements Provider {
  readonly name = 'fly' as const;
  readonly hubObserves = false;
  private readonly machines = new Map<string, MachineInfo>();
  constructor(private readonly tokenDir: string) {
    mkdirSync(tokenDir, { recursive: true });
  }
  async create(spec: MachineSpec): Promise<MachineInfo> {
    // Where a real machine would get /etc/thopter/status-token.
    writeFileSync(path.join(this.tokenDir, spec.thopterId), spec.statusToken, { mode: 0o600 });
    const info = { id: spec.id, thopterId: spec.thopterId, createdAt: new Date().toISOString() };
    this.machines.set(spec.id, info);
    return info;
  }
  get = async (id: string) => this.machines.get(id) ?? null;
  list = async () => [...this.machines.values()];
  ready = async () => true;
  destroy = async (id: string) => void this.machines.delete(id);
  transport = async () => standInTransport;
  snapshot = async (): Promise<SessionSnapshot> => {
    throw new Error('an observer reports this session');
  };
  goldenClaudes = async () => [];
  goldenClaude = async (): Promise<GoldenClaude | null> => null;
  listGoldenClaudes = async (): Promise<GoldenClaudeInfo[]> => [];
  createGoldenClaude = async (): Promise<GoldenClaudeInfo> => {
    throw new Error('no golden claudes here');
  };
  destroyGoldenClaude = async () => false;
  close = async () => {};
}

async function hubRole() {
  const config = loadConfig(process.env);
  const hub = await startHub(config, createLogger(config.logLevel), {
    provider: new StandInProvider(process.env.BENCH_TOKEN_DIR!),
  });
  process.stdout.write(`listening ${hub.url}\n`);
  process.on('SIGTERM', () => void hub.stop().then(() => process.exit(0)));
  const dir = process.env.BENCH_HUB_PROFILE;
  if (dir) {
    // SIGUSR2 starts a V8 CPU profile of the hub; the next one writes it: one per measured window.
    const { Session } = await import('node:inspector/promises');
    const session = new Session();
    session.connect();
    let running = false;
    let n = 0;
    process.on('SIGUSR2', () => {
      void (async () => {
        if (!running) {
          running = true;
          await session.post('Profiler.enable');
          await session.post('Profiler.start');
        } else {
          running = false;
          const { profile } = await session.post('Profiler.stop');
          writeFileSync(path.join(dir, `hub-${++n}.cpuprofile`), JSON.stringify(profile));
        }
      })();
    });
  }
}

// ---------------------------------------------------------------------------------------------
// The load generator's side.

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** A process's user + system CPU so far, in seconds, from /proc (all its threads). */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  // After "pid (comm) ", utime and stime are fields 14 and 15 (0-based 11 and 12 here).
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}
/** All cores' busy and total time since boot, in clock ticks, from /proc/stat. */
function machineTicks(): { busy: number; total: number } {
  const n = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = n.reduce((a, b) => a + b, 0);
  return { busy: total - (n[3] ?? 0) - (n[4] ?? 0), total };
}
const selfCpuSeconds = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};

const AGENT_LINES = [
  '● Read(src/processors/lifecycle.ts)',
  '  ⎿  Read 233 lines (ctrl+r to expand)',
  '● Update(src/api/thopters.ts)',
  '  ⎿  Updated src/api/thopters.ts with 12 additions and 3 removals',
  '● Bash(npm test -- --test-name-pattern="status")',
  '  ⎿  # tests 42',
  '     # pass 42',
  "● I'll look at how the store writes the session next, then run the tests again.",
  '✻ Thinking…',
  '  The failing assertion compares idleSince with lastActivity; the fixture is off by one tick.',
  '● Search(pattern: "setSession", path: "src")',
  '  ⎿  Found 3 files',
  '> ',
  '  ? for shortcuts                                                   ◯ IDE disconnected',
];

function randomLine(): string {
  const base = AGENT_LINES[Math.floor(Math.random() * AGENT_LINES.length)]!;
  return base.length > 60 ? base : `${base} ${'·'.repeat(Math.floor(Math.random() * 30))}`;
}

interface Thopter {
  id: string;
  token: string;
  agent: Agent;
  lines: string[];
  lastActivity: string;
}

function screenOf(lines: string[]): string {
  return lines.join('\n');
}

function newThopter(id: string, token: string): Thopter {
  const target = 2048 + Math.floor(Math.random() * 2048);
  const lines: string[] = [];
  while (Buffer.byteLength(screenOf(lines)) < target) lines.push(randomLine());
  return {
    id,
    token,
    // One connection per thopter, kept alive between posts, as each observer's fetch keeps one.
    agent: new Agent({ keepAlive: true, maxSockets: 1 }),
    lines,
    lastActivity: new Date().toISOString(),
  };
}

const spawnedAt = new Date().toISOString();

function bodyFor(t: Thopter): string {
  // Half the posts come from an agent at work (a new line at the bottom), half from a quiet one.
  if (Math.random() < 0.5) {
    t.lines.shift();
    t.lines.push(randomLine());
    t.lastActivity = new Date().toISOString();
  }
  const post: StatusPost = {
    thopterId: t.id,
    tmuxState: 'active',
    claudeProcess: 'running',
    screenDump: screenOf(t.lines),
    lastActivity: t.lastActivity,
    spawnedAt,
    repository: 'acme/widgets',
    github: {
      issueNumber: '42',
      issueTitle: 'Bench the status endpoint',
      issueUrl: 'https://github.com/acme/widgets/issues/42',
    },
  };
  return JSON.stringify(post);
}

interface Sample {
  startedAt: number;
  endedAt: number;
  status: number;
}

function post(port: number, t: Thopter, samples: Sample[]) {
  const body = bodyFor(t);
  const startedAt = performance.now();
  const done = (status: number) => samples.push({ startedAt, endedAt: performance.now(), status });
  const req = request(
    {
      agent: t.agent,
      host: '127.0.0.1',
      port,
      method: 'POST',
      path: `/api/thopters/${t.id}/status`,
      headers: {
        authorization: `Bearer ${t.token}`,
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
      },
    },
    (res) => {
      res.resume();
      res.once('end', () => done(res.statusCode ?? 0));
    },
  );
  req.once('error', () => done(0));
  req.end(body);
}

const pct = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? NaN;

interface Row {
  target: string;
  achieved: number;
  p50: number;
  p99: number;
  max: number;
  hubCpu: number;
  hubCpuPerPost: number;
  redisCpu: number;
  loadCpu: number;
  machineBusy: number;
  failed: number;
}

/** Holds `rate` posts/s over all thopters (round robin) for the warm-up and the measured window. */
async function hold(port: number, thopters: Thopter[], rate: number, pids: { hub: number; redis: number }) {
  const samples: Sample[] = [];
  const t0 = performance.now();
  const from = t0 + WARM_MS;
  const until = from + SECONDS * 1000;
  let sent = 0;
  let before:
    { hub: number; redis: number; load: number; machine: ReturnType<typeof machineTicks> } | undefined;
  let after: typeof before;
  // A failure in here (the hub died: its /proc entry is gone) ends the run through main's cleanup.
  await new Promise<void>((resolve, reject) => {
    const timer = setInterval(() => {
      try {
        const now = performance.now();
        if (!before && now >= from) {
          if (PROFILE) process.kill(pids.hub, 'SIGUSR2');
          before = {
            hub: cpuSeconds(pids.hub),
            redis: cpuSeconds(pids.redis),
            load: selfCpuSeconds(),
            machine: machineTicks(),
          };
        }
        if (now >= until) {
          after = {
            hub: cpuSeconds(pids.hub),
            redis: cpuSeconds(pids.redis),
            load: selfCpuSeconds(),
            machine: machineTicks(),
          };
          if (PROFILE) process.kill(pids.hub, 'SIGUSR2');
          clearInterval(timer);
          return resolve();
        }
        const due = Math.floor(((now - t0) * rate) / 1000);
        for (; sent < due; sent++) post(port, thopters[sent % thopters.length]!, samples);
      } catch (err) {
        clearInterval(timer);
        reject(err as Error);
      }
    }, 2);
  });
  const window = (until - from) / 1000;
  await waitFor('the last posts to be answered', () => samples.length >= sent, { timeoutMs: 60_000 });
  const measured = samples.filter((s) => s.startedAt >= from && s.startedAt < until);
  const answered = samples.filter((s) => s.endedAt >= from && s.endedAt < until && s.status === 204);
  const latencies = measured.map((s) => s.endedAt - s.startedAt).sort((a, b) => a - b);
  const hubCpu = after!.hub - before!.hub;
  return {
    achieved: answered.length / window,
    p50: pct(latencies, 0.5),
    p99: pct(latencies, 0.99),
    max: latencies.at(-1) ?? NaN,
    hubCpu: (100 * hubCpu) / window,
    hubCpuPerPost: (hubCpu * 1e6) / Math.max(1, answered.length),
    redisCpu: (100 * (after!.redis - before!.redis)) / window,
    loadCpu: (100 * (after!.load - before!.load)) / window,
    machineBusy:
      (100 * (after!.machine.busy - before!.machine.busy)) / (after!.machine.total - before!.machine.total),
    failed: measured.filter((s) => s.status !== 204).length,
  };
}

function machineInfo(): string {
  const redis = execFileSync('redis-server', ['--version'], { encoding: 'utf8' }).trim();
  return [
    `cpu: ${os.cpus()[0]?.model ?? 'unknown'}, ${os.cpus().length} cores, ${Math.round(os.totalmem() / 2 ** 30)} GiB`,
    `os: ${os.type()} ${os.release()}; node ${process.version}; ${redis.split(' ').slice(0, 3).join(' ')}`,
  ].join('\n');
}

async function main() {
  console.log(machineInfo());
  console.log(
    `thopters: ${THOPTERS}; rates: ${RATES.join(', ')} posts/s; ${SECONDS} s measured per rate after ${WARM_MS / 1000} s of warm-up\n`,
  );
  const world = await new TestWorld().start();
  const tokenDir = path.join(world.dir, 'tokens');
  const port = await freePort();
  const env = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '/root',
    ...world.env({
      HUB_PORT: String(port),
      LOG_LEVEL: 'warn',
      MAX_THOPTERS: String(THOPTERS),
      HUB_PHASE_CONCURRENCY: '200',
      THOPTER_STATUS_INTERVAL: '3s',
    }),
    BENCH_ROLE: 'hub',
    BENCH_TOKEN_DIR: tokenDir,
    ...(PROFILE ? { BENCH_HUB_PROFILE: PROFILE } : {}),
  };
  const hubProcess: ChildProcess = spawn(process.execPath, ['--import', 'tsx', THIS_FILE], {
    env,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  hubProcess.stdout!.on('data', (d) => (out += d));
  const hubExited = new Promise((r) => hubProcess.once('exit', r));
  const thopters: Thopter[] = [];
  try {
    const url = await waitFor('the hub to listen', () => /listening (\S+)/.exec(out)?.[1], {
      timeoutMs: 30_000,
    });
    const pids = {
      hub: hubProcess.pid!,
      redis: Number(readFileSync(path.join(world.dir, 'redis', 'redis.pid'), 'utf8')),
    };

    const launchStarted = performance.now();
    const ids: string[] = [];
    for (let i = 0; i < THOPTERS; i += 50) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(50, THOPTERS - i) }, (_, j) =>
          api(url, 'POST', '/api/thopters', { repository: 'acme/widgets', title: `bench ${i + j}` }),
        ),
      );
      for (const r of batch) {
        if (r.status !== 202) throw new Error(`launch answered ${r.status}: ${JSON.stringify(r.body)}`);
        ids.push(r.body.id);
      }
    }
    const store = new ThopterStore(world.client, 'tw');
    await waitFor(
      `${THOPTERS} thopters running`,
      async () => (await store.list({ limit: THOPTERS, states: ['running'] })).length === THOPTERS,
      { timeoutMs: 600_000, intervalMs: 1000 },
    );
    console.log(
      `${THOPTERS} thopters launched and running in ${((performance.now() - launchStarted) / 1000).toFixed(1)} s`,
    );
    for (const id of ids) thopters.push(newThopter(id, readFileSync(path.join(tokenDir, id), 'utf8')));
    statusPostSchema.parse(JSON.parse(bodyFor(thopters[0]!)));
    const sizes = thopters.map((t) => Buffer.byteLength(bodyFor(t))).sort((a, b) => a - b);
    console.log(`post bodies: ${sizes[0]}–${sizes.at(-1)} bytes, median ${pct(sizes, 0.5)}\n`);

    // Let the launch's own work (phase jobs, events) settle, then measure the hub at rest.
    await new Promise((r) => setTimeout(r, 5000));
    const idleFrom = { hub: cpuSeconds(pids.hub), redis: cpuSeconds(pids.redis), at: performance.now() };
    await new Promise((r) => setTimeout(r, SECONDS * 1000));
    const idleSecs = (performance.now() - idleFrom.at) / 1000;
    const idleHub = (100 * (cpuSeconds(pids.hub) - idleFrom.hub)) / idleSecs;
    const idleRedis = (100 * (cpuSeconds(pids.redis) - idleFrom.redis)) / idleSecs;

    const rows: Row[] = [];
    for (const rate of RATES) {
      const r = await hold(port, thopters, rate, pids);
      const every = (THOPTERS / rate).toFixed(1);
      rows.push({ target: `${rate} (${THOPTERS} every ${every} s)`, ...r });
      console.log(`${rate} posts/s done: hub ${r.hubCpu.toFixed(1)}% of a core`);
    }
    const sessions = await store.getMany(ids.slice(0, 20));
    if (!sessions.every((t) => t.session?.source === 'observer')) throw new Error('a post was not recorded');

    const f = (n: number, d = 0) => n.toFixed(d);
    console.log(
      '\n| target posts/s | achieved posts/s | p50 | p99 | max | hub CPU (% of one core) | hub CPU per post | redis CPU | load generator CPU | machine busy (all cores) | everything else on the machine | failed |',
    );
    console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
    console.log(
      `| 0 (idle, ${THOPTERS} running) | 0 | | | | ${f(idleHub, 1)}% | | ${f(idleRedis, 1)}% | | | | |`,
    );
    for (const r of rows) {
      console.log(
        `| ${r.target} | ${f(r.achieved)} | ${f(r.p50, 1)} ms | ${f(r.p99, 1)} ms | ${f(r.max, 1)} ms | ${f(r.hubCpu, 1)}% | ${f(r.hubCpuPerPost)} µs | ${f(r.redisCpu, 1)}% | ${f(r.loadCpu, 1)}% | ${f(r.machineBusy)}% | ${f(r.machineBusy * os.cpus().length - r.hubCpu - r.redisCpu - r.loadCpu)}% of a core | ${r.failed} |`,
      );
    }
    const first = rows[0]!;
    console.log(
      `\nAt ${first.target}: the hub uses ${f(first.hubCpu, 1)}% of one core (${f(first.hubCpu - idleHub, 1)}% above its idle ${f(idleHub, 1)}%); goal < 10%.`,
    );
  } finally {
    for (const t of thopters) t.agent.destroy();
    if (hubProcess.exitCode === null) hubProcess.kill('SIGKILL');
    await hubExited;
    await world.close();
  }
}

if (process.env.BENCH_ROLE === 'hub') {
  void hubRole().catch((err) => {
    console.error(err);
    process.exit(1);
  });
} else {
  void main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
