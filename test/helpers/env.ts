import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { loadConfig, type Config } from '../../src/config.js';
import { startHub, type Hub, type HubOptions } from '../../src/hub.js';
import { createLogger } from '../../src/log.js';
import { startEmbeddedRedis, type EmbeddedRedis } from '../../src/redis.js';
import { waitFor } from './wait.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const AGENT = path.join(ROOT, 'test/fixtures/agent.sh');
// Random-looking: the hub refuses a token made of words (weakTokenReason).
export const TOKEN = 'c3f1a9e07b5d42c8e6a1f0b9d7';

const silent = createLogger('silent');

/**
 * One test file's world: a temp folder, its own redis-server on a unix socket, a fresh queue
 * prefix per hub group, and everything torn down after. A leaked hub or machine fails cleanup.
 */
export class TestWorld {
  readonly dir = mkdtempSync(path.join(tmpdir(), 'thw-'));
  /** Sockets, servers and child processes open once the world started: anything more at the end leaked. */
  private baseline = 0;
  redis!: EmbeddedRedis;
  client!: Redis;
  private hubs: Hub[] = [];
  private children: ChildProcess[] = [];
  /** Every DATA_DIR a hub of this world used: machines left in any of them are ended at close. */
  private readonly dataDirs = new Set<string>();

  async start() {
    this.redis = await startEmbeddedRedis(path.join(this.dir, 'redis'), silent);
    this.client = new Redis({ path: this.redis.socket, maxRetriesPerRequest: null });
    await this.client.ping();
    this.baseline = openHandles();
    return this;
  }

  get redisUrl() {
    return `unix://${this.redis.socket}`;
  }

  /** A bare repository with one commit on main, playing origin. */
  origin(name = 'project'): string {
    const bare = path.join(this.dir, `${name}.git`);
    const work = path.join(this.dir, `${name}-seed`);
    const git = (args: string[], cwd?: string) => execFileSync('git', args, { cwd, stdio: 'pipe' });
    git(['init', '-q', '--bare', '-b', 'main', bare]);
    git(['init', '-q', '-b', 'main', work]);
    writeFileSync(path.join(work, 'README.md'), `# ${name}\n`);
    git(['add', '.'], work);
    git(['-c', 'user.email=t@t', '-c', 'user.name=t', 'commit', '-qm', 'initial'], work);
    git(['push', '-q', bare, 'main'], work);
    return bare;
  }

  branches(bare: string): string[] {
    return execFileSync('git', ['-C', bare, 'branch', '--format=%(refname:short)'], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean);
  }

  /** Every value in this world's Redis (job data, records, events), whatever its type, as text. */
  async redisText(): Promise<string> {
    const c = this.client;
    const out: unknown[] = [];
    for (const key of await c.keys('*')) {
      const type = await c.type(key);
      if (type === 'hash') out.push(key, await c.hgetall(key));
      else if (type === 'list') out.push(key, await c.lrange(key, 0, -1));
      else if (type === 'zset') out.push(key, await c.zrange(key, '0', '-1'));
      else if (type === 'set') out.push(key, await c.smembers(key));
      else if (type === 'string') out.push(key, await c.get(key));
      else if (type === 'stream') out.push(key, await c.xrange(key, '-', '+'));
    }
    return JSON.stringify(out);
  }

  /** Environment for a hub of this world. */
  env(overrides: Record<string, string> = {}): Record<string, string> {
    this.dataDirs.add(overrides.DATA_DIR || path.join(this.dir, 'data'));
    return {
      DATA_DIR: path.join(this.dir, 'data'),
      REDIS_URL: this.redisUrl,
      HUB_REDIS_PREFIX: 'tw',
      HUB_PORT: '0',
      HUB_API_TOKEN: TOKEN,
      THOPTER_AGENT_COMMAND: `bash ${AGENT}`,
      THOPTER_STATUS_INTERVAL: '1s',
      // The bare repositories origin() makes live here.
      THOPTER_LOCAL_REPOSITORIES: this.dir,
      LOG_LEVEL: 'silent',
      ...overrides,
    };
  }

  config(overrides: Record<string, string> = {}): Config {
    return loadConfig(this.env(overrides));
  }

  /** A hub in this process. */
  async hub(overrides: Record<string, string> = {}, logs?: string[], options?: HubOptions): Promise<Hub> {
    const log = logs
      ? createLogger(
          'debug',
          new Writable({
            write(chunk, _enc, cb) {
              logs.push(String(chunk));
              cb();
            },
          }),
        )
      : silent;
    const hub = await startHub(this.config(overrides), log, options);
    this.hubs.push(hub);
    return hub;
  }

  async stopHub(hub: Hub) {
    this.hubs = this.hubs.filter((h) => h !== hub);
    await hub.stop();
  }

  /** A hub in its own process (for kill -9 and several hubs at once). Resolves with its URL. */
  async spawnHub(
    overrides: Record<string, string> = {},
  ): Promise<{ child: ChildProcess; url: string; output: () => string }> {
    const port = await freePort();
    const env = {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/root',
      ...this.env({ HUB_PORT: String(port), LOG_LEVEL: 'info', ...overrides }),
    };
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/main.ts')], {
      env,
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout!.on('data', (d) => (out += d));
    child.stderr!.on('data', (d) => (out += d));
    this.children.push(child);
    const url = `http://127.0.0.1:${port}`;
    await waitFor(
      `hub on port ${port} to answer (output: ${out.slice(-500)})`,
      async () => {
        if (child.exitCode !== null)
          throw new Error(`hub exited with ${child.exitCode}: ${out.slice(-2000)}`);
        const r = await fetch(`${url}/health`).catch(() => null);
        return r?.ok;
      },
      { timeoutMs: 30_000 },
    );
    return { child, url, output: () => out };
  }

  /** Stops every hub of this world, in this process or spawned. */
  async closeHubs() {
    for (const hub of this.hubs.splice(0)) await hub.stop().catch(() => {});
    for (const c of this.children.splice(0)) {
      if (c.exitCode === null && c.signalCode === null) {
        c.kill('SIGKILL');
        await new Promise((r) => c.once('exit', r));
      }
    }
  }

  async close() {
    await this.closeHubs();
    // Any machine a test left behind (running thopters outlive their hub by design): end its tmux
    // server so no process outlives the test.
    for (const dataDir of this.dataDirs) {
      const machines = path.join(dataDir, 'thopters');
      let ids: string[] = [];
      try {
        ids = readdirSync(machines);
      } catch {
        // no machines
      }
      for (const id of ids) {
        try {
          execFileSync('tmux', ['kill-server'], {
            env: { ...process.env, TMUX_TMPDIR: path.join(machines, id, 'tmux') },
            stdio: 'ignore',
          });
        } catch {
          // no server
        }
      }
    }
    // kill-server returns before the server process has exited: give the ones just told to stop a
    // moment to go. Whatever tmux server is left after that was started under this world's folder
    // and lost track of (its machine folder is gone, or lives where no hub of this world looked):
    // it would run forever.
    await waitFor('the tmux servers to exit', () => tmuxServersUnder(this.dir).length === 0, {
      timeoutMs: 5000,
    }).catch(() => {});
    const leaked = tmuxServersUnder(this.dir);
    for (const { pid } of leaked) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
    }
    try {
      if (leaked.length) {
        throw new Error(
          `tmux servers outlived the test world: ${leaked.map((l) => `${l.pid} (TMUX_TMPDIR=${l.tmpdir})`).join(', ')}`,
        );
      }
      // A hub that did not close a Redis connection, a server or a child process fails the test
      // file (checked while Redis still runs, so a leaked client is connected and counted).
      await waitFor(
        `every connection, server and child process to close (open: ${openHandles()}, at start: ${this.baseline})`,
        () => openHandles() <= this.baseline,
        { timeoutMs: 10_000 },
      );
    } finally {
      this.client?.disconnect();
      await this.redis?.stop();
      // An agent its tmux server's end just hung up on may still be writing its files (Claude Code
      // saves its state as it exits): a folder that filled again is removed again.
      rmSync(this.dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 200 });
    }
  }
}

/** tmux servers (this user's) whose TMUX_TMPDIR is under `dir`, from /proc. */
export function tmuxServersUnder(dir: string): Array<{ pid: number; tmpdir: string }> {
  const found: Array<{ pid: number; tmpdir: string }> = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/comm`, 'utf8').trim() !== 'tmux: server') continue;
      // A server forks from the client that started it without exec: its environ is that client's.
      const tmpdir = readFileSync(`/proc/${name}/environ`, 'utf8')
        .split('\0')
        .find((v) => v.startsWith('TMUX_TMPDIR='))
        ?.slice('TMUX_TMPDIR='.length);
      if (tmpdir && (tmpdir === dir || tmpdir.startsWith(dir + path.sep)))
        found.push({ pid: Number(name), tmpdir });
    } catch {
      // ended meanwhile, or another user's
    }
  }
  return found;
}

const HANDLE_TYPES = new Set(['TCPSocketWrap', 'TCPServerWrap', 'PipeWrap', 'PipeServerWrap', 'ProcessWrap']);
const openHandles = () => process.getActiveResourcesInfo().filter((t) => HANDLE_TYPES.has(t)).length;

/** Calls the hub's API with the test token. */
export async function api(url: string, method: string, route: string, body?: unknown, token = TOKEN) {
  const res = await fetch(`${url}${route}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: any;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = text;
  }
  return { status: res.status, body: json };
}

export function writeFixture(dir: string, name: string, content: string, mode = 0o644): string {
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  writeFileSync(file, content, { mode });
  return file;
}

/** A TCP port nothing listens on right now. */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}
