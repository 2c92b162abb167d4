/**
 * What the observer costs inside a thopter: CPU and bytes posted per minute.
 *
 *   node --import tsx bench/observer-cost.ts            # 60 s at the default 3 s interval
 *   BENCH_SECONDS=30 node --import tsx bench/observer-cost.ts
 *
 * Runs the observer bundle (built as `npm run build:observer` builds it) with its defaults against
 * a tmux session of its own (200×50, as the local provider makes) whose pane changes twice a
 * second like an agent at work, and a small HTTP server standing in for the hub that counts the
 * bytes it receives and answers 204. CPU is read from /proc: the observer's own, that of the
 * processes it runs (tmux clients, pgrep; counted once they exit), and the tmux server's extra
 * work, against a first stretch with no observer.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { buildObserver } from '../thopter/observer/build.js';

const SECONDS = Number(process.env.BENCH_SECONDS ?? 60);
const QUIET_SECONDS = 15;
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** user+system CPU in seconds of a process, and of its children that have exited. */
function cpu(pid: number): { self: number; children: number } {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  // After "pid (comm) ": utime, stime, cutime, cstime are fields 14–17 (0-based 11–14 here).
  return {
    self: (Number(f[11]) + Number(f[12])) / CLK_TCK,
    children: (Number(f[13]) + Number(f[14])) / CLK_TCK,
  };
}

function rssKb(pid: number): number {
  const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1] ?? NaN);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'obs-bench-'));
  const processes = readdirSync('/proc').filter((n) => /^\d+$/.test(n)).length;
  console.log(`cpu: ${os.cpus()[0]?.model ?? 'unknown'}, ${os.cpus().length} cores; node ${process.version}`);
  console.log(
    `os: ${os.type()} ${os.release()}; ${execFileSync('tmux', ['-V'], { encoding: 'utf8' }).trim()}; ${processes} processes running (pgrep reads them all)`,
  );
  const tmuxEnv = { PATH: process.env.PATH!, HOME: dir, TMUX_TMPDIR: dir, TERM: 'xterm-256color' };
  const tmux = (args: string[]) => execFileSync('tmux', args, { env: tmuxEnv, encoding: 'utf8' });
  let observer: ReturnType<typeof spawn> | undefined;
  let server: ReturnType<typeof createServer> | undefined;
  try {
    const bundle = await buildObserver(path.join(dir, 'observer.mjs'));

    // The hub's stand-in: counts every byte it is sent (request lines, headers, bodies).
    let bytes = 0;
    let posts = 0;
    let bodyBytes = 0;
    server = createServer((req, res) => {
      let size = 0;
      req.on('data', (d: Buffer) => (size += d.length));
      req.on('end', () => {
        posts++;
        bodyBytes += size;
        res.statusCode = 204;
        res.end();
      });
    });
    server.on('connection', (socket) => socket.on('data', (d: Buffer) => (bytes += d.length)));
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;

    // An agent at work: a new line of output every half second, scrolling the 200×50 pane.
    const agent = path.join(dir, 'agent.sh');
    writeFileSync(
      agent,
      `i=0; while true; do i=$((i+1)); echo "● Step $i: Read(src/module-$((RANDOM % 40)).ts) ⎿ Read $((RANDOM % 500)) lines; updated $((RANDOM % 9)) files"; sleep 0.5; done\n`,
    );
    tmux(['new-session', '-d', '-s', 'thopter', '-x', '200', '-y', '50', `bash ${agent}`]);
    const tmuxServer = Number(tmux(['display-message', '-p', '#{pid}']).trim());

    const quietFrom = cpu(tmuxServer).self;
    await sleep(QUIET_SECONDS * 1000);
    const tmuxAlone = (cpu(tmuxServer).self - quietFrom) / QUIET_SECONDS;

    mkdirSync(path.join(dir, '.thopter'));
    writeFileSync(path.join(dir, '.thopter', 'status-token'), 'bench-token', { mode: 0o600 });
    const id = 'thopter-0123456789ab';
    observer = spawn(process.execPath, [bundle], {
      env: {
        PATH: process.env.PATH!,
        HOME: dir,
        TMUX_TMPDIR: dir,
        THOPTER_ID: id,
        HUB_STATUS_URL: `http://127.0.0.1:${port}/api/thopters/${id}/status`,
        OBSERVER_TOKEN_FILE: path.join(dir, '.thopter', 'status-token'),
        OBSERVER_ISSUE_FILE: path.join(dir, 'workspace', 'issue.json'),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    observer.stdout!.on('data', (d) => (out += d));
    observer.stderr!.on('data', (d) => (out += d));
    const exited = new Promise<number | null>((r) => observer!.once('exit', r));

    // Start-up (loading the bundle) is counted apart from the steady state.
    await sleep(2000);
    const pid = observer.pid!;
    const startup = cpu(pid);
    const from = { obs: startup, tmux: cpu(tmuxServer).self, bytes, posts, bodyBytes, at: performance.now() };
    await sleep(SECONDS * 1000);
    const to = { obs: cpu(pid), tmux: cpu(tmuxServer).self, bytes, posts, bodyBytes, at: performance.now() };
    const rss = rssKb(pid);
    observer.kill('SIGTERM');
    const code = await exited;

    const minutes = (to.at - from.at) / 60_000;
    const perMin = (n: number) => n / minutes;
    const self = perMin(to.obs.self - from.obs.self);
    const children = perMin(to.obs.children - from.obs.children);
    const tmuxExtra = perMin(to.tmux - from.tmux) - tmuxAlone * 60;
    const n = to.posts - from.posts;
    console.log(`\nobserver at its defaults (3 s interval), ${SECONDS} s measured:\n`);
    console.log('| measure | per minute |');
    console.log('| --- | --- |');
    console.log(`| observer process CPU | ${self.toFixed(2)} s |`);
    console.log(`| its tmux and pgrep runs CPU | ${children.toFixed(2)} s |`);
    console.log(
      `| total | ${(self + children).toFixed(2)} s (${((100 * (self + children)) / 60).toFixed(2)}% of one core) |`,
    );
    // /proc counts in 10 ms ticks: less than that over a minute is lost in the tmux server's own work.
    console.log(
      `| tmux server, extra for the captures | ${tmuxExtra < 0.01 ? '< 0.01' : tmuxExtra.toFixed(2)} s |`,
    );
    console.log(`| posts | ${perMin(n).toFixed(1)} |`);
    console.log(
      `| bytes posted (on the wire) | ${Math.round(perMin(to.bytes - from.bytes))} (${((perMin(to.bytes - from.bytes) * 60 * 24) / 2 ** 20).toFixed(0)} MiB a day) |`,
    );
    console.log(
      `| of which bodies | ${Math.round(perMin(to.bodyBytes - from.bodyBytes))} (${Math.round((to.bodyBytes - from.bodyBytes) / Math.max(1, n))} bytes a post) |`,
    );
    console.log(
      `\nstart-up CPU (loading the bundle, first looks): ${(startup.self + startup.children).toFixed(2)} s; resident memory ${Math.round(rss / 1024)} MiB`,
    );
    console.log(`exit code after SIGTERM: ${code}; last log line: ${out.trim().split('\n').at(-1)}`);
  } finally {
    if (observer && observer.exitCode === null) observer.kill('SIGKILL');
    server?.closeAllConnections();
    server?.close();
    try {
      tmux(['kill-server']);
    } catch {
      // already gone
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

void main().catch((err) => {
  console.error(err);
  process.exit(1);
});
