import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from './log.js';
import { sleep } from './errors.js';

/** Where to reach Redis: a URL as given in REDIS_URL, or the embedded server's unix socket. */
export type RedisTarget = { url: string } | { socket: string };

/**
 * Connection options. Workers need `maxRetriesPerRequest: null` (BullMQ refuses anything else);
 * request paths (the API) should fail fast instead, so they get a small number.
 */
export function redisOptions(target: RedisTarget, role: 'worker' | 'client'): RedisOptions {
  const base: RedisOptions = {
    maxRetriesPerRequest: role === 'worker' ? null : 3,
    enableReadyCheck: true,
    lazyConnect: false,
  };
  if ('socket' in target) return { ...base, path: target.socket };
  if (target.url.startsWith('unix://')) return { ...base, path: target.url.slice('unix://'.length) };
  const u = new URL(target.url);
  return {
    ...base,
    host: u.hostname,
    port: Number(u.port || 6379),
    username: u.username ? decodeURIComponent(u.username) : undefined,
    password: u.password ? decodeURIComponent(u.password) : undefined,
    db: u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0,
    tls: u.protocol === 'rediss:' ? {} : undefined,
  };
}

export function connectRedis(target: RedisTarget, role: 'worker' | 'client', log?: Logger): Redis {
  const redis = new Redis(redisOptions(target, role));
  // Without a listener ioredis prints every reconnect attempt to stderr.
  redis.on('error', (err) => log?.warn({ err: err.message }, 'redis connection error'));
  return redis;
}

export class RedisMissingError extends Error {
  constructor() {
    super(
      'redis-server was not found on PATH. Install it (Debian/Ubuntu: sudo apt-get install -y redis-server), ' +
        'or point REDIS_URL at a Redis you already run.',
    );
    this.name = 'RedisMissingError';
  }
}

export interface EmbeddedRedis {
  socket: string;
  /** True when this process started the server (and so stops it); false when it joined one already running. */
  owned: boolean;
  /** False from an unexpected exit of the server until its restart answers. */
  readonly up: boolean;
  stop(): Promise<void>;
}

async function pingSocket(socket: string): Promise<boolean> {
  const probe = new Redis({
    path: socket,
    lazyConnect: true,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  probe.on('error', () => {});
  try {
    await probe.connect();
    return (await probe.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    probe.disconnect();
  }
}

/** The longest wait between two attempts to restart an embedded redis-server that keeps failing. */
const RESTART_BACKOFF_MAX_MS = 30_000;

/**
 * Starts redis-server under `dir` listening only on a unix socket (no TCP port at all), with AOF
 * and noeviction as BullMQ needs. If a server is already answering on that socket (another hub
 * process on the same DATA_DIR, or one left behind by a hub killed with -9) it is joined, not
 * replaced: its AOF holds the accepted requests.
 *
 * The server runs in a session of its own: a Ctrl-C or `kill -TERM -PGID` meant for the hub must
 * not stop Redis under the hub's hand-back of active thopters, which would then wait forever. The
 * hub stops it last. If it exits on its own (killed, out of memory), it is started again on the
 * same AOF, so the hub recovers without anyone acting.
 */
export async function startEmbeddedRedis(dir: string, log: Logger): Promise<EmbeddedRedis> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const socket = path.join(dir, 'redis.sock');
  if (await pingSocket(socket)) {
    log.info({ socket }, 'joined the embedded redis-server already running');
    return { socket, owned: false, up: true, stop: async () => {} };
  }
  if (spawnSync('redis-server', ['--version']).error) throw new RedisMissingError();

  // Aborted by stop: no more restarts, and a restart's backoff ends at once.
  const stopped = new AbortController();
  let up = false;
  let server = await launchRedis(dir, socket);
  up = true;
  log.info({ socket }, 'started embedded redis-server');

  const restart = async () => {
    up = false;
    log.error(
      { socket, log: path.join(dir, 'redis.log') },
      'the embedded redis-server exited; restarting it on its AOF',
    );
    for (let attempt = 1; !stopped.signal.aborted; attempt++) {
      try {
        server = await launchRedis(dir, socket, (spawned) => (server = spawned));
        if (stopped.signal.aborted) return;
        up = true;
        log.info({ socket }, 'restarted embedded redis-server');
        watch();
        return;
      } catch (err) {
        if (stopped.signal.aborted) return;
        log.error({ err: (err as Error).message, attempt }, 'could not restart the embedded redis-server');
        await sleep(Math.min(1000 * attempt, RESTART_BACKOFF_MAX_MS), stopped.signal).catch(() => {});
      }
    }
  };
  // A hub that exits without stopping (a second Ctrl-C, the stop bound, a failed start) still
  // stops its server: SIGTERM is sent synchronously, and redis-server writes its AOF on it.
  const stopOnExit = () => {
    stopped.abort();
    server.child.kill('SIGTERM');
  };
  process.once('exit', stopOnExit);
  const watch = () => {
    const watched = server;
    void watched.exited.then(async () => {
      if (!stopped.signal.aborted && server === watched) await restart();
    });
  };
  watch();

  return {
    socket,
    owned: true,
    get up() {
      return up;
    },
    async stop() {
      stopped.abort();
      process.removeListener('exit', stopOnExit);
      const { child, exited } = server;
      if (child.exitCode !== null || child.signalCode !== null) return;
      // SIGTERM makes redis-server flush the AOF and exit cleanly.
      child.kill('SIGTERM');
      const done = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
      if (!done) child.kill('SIGKILL');
    },
  };
}

interface RedisServer {
  child: ChildProcess;
  exited: Promise<void>;
}

/**
 * Spawns redis-server and waits until it answers on `socket`. `onSpawn` learns the child at once,
 * so that a stop arriving during a restart reaches it.
 */
async function launchRedis(
  dir: string,
  socket: string,
  onSpawn?: (server: RedisServer) => void,
): Promise<RedisServer> {
  const args = [
    '--port', '0',
    '--unixsocket', socket,
    '--unixsocketperm', '700',
    '--dir', dir,
    '--appendonly', 'yes',
    '--appendfsync', 'everysec',
    '--maxmemory-policy', 'noeviction',
    '--save', '',
    '--daemonize', 'no',
    '--logfile', path.join(dir, 'redis.log'),
    '--pidfile', path.join(dir, 'redis.pid'),
  ]; // prettier-ignore
  // detached: a new session, out of reach of signals sent to the hub's process group.
  const child: ChildProcess = spawn('redis-server', args, { stdio: 'ignore', detached: true });
  let exited = false;
  const server = {
    child,
    exited: new Promise<void>((resolve) => child.once('exit', () => ((exited = true), resolve()))),
  };
  onSpawn?.(server);

  const deadline = Date.now() + 15_000;
  while (!(await pingSocket(socket))) {
    if (exited)
      throw new Error(
        `redis-server exited at start: see ${path.join(dir, 'redis.log')} (is DATA_DIR writable?)`,
      );
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(
        `redis-server did not answer on ${socket} within 15 s: see ${path.join(dir, 'redis.log')}`,
      );
    }
    await sleep(50);
  }
  return server;
}
