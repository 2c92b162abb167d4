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

/**
 * Starts redis-server under `dir` listening only on a unix socket (no TCP port at all), with AOF
 * and noeviction as BullMQ needs. If a server is already answering on that socket (another hub
 * process on the same DATA_DIR, or one left behind by a hub killed with -9) it is joined, not
 * replaced: its AOF holds the accepted requests.
 */
export async function startEmbeddedRedis(dir: string, log: Logger): Promise<EmbeddedRedis> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const socket = path.join(dir, 'redis.sock');
  if (await pingSocket(socket)) {
    log.info({ socket }, 'joined the embedded redis-server already running');
    return { socket, owned: false, stop: async () => {} };
  }
  if (spawnSync('redis-server', ['--version']).error) throw new RedisMissingError();

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
  const child: ChildProcess = spawn('redis-server', args, { stdio: 'ignore' });
  let exited = false;
  const exitPromise = new Promise<void>((resolve) => child.once('exit', () => ((exited = true), resolve())));

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
  log.info({ socket }, 'started embedded redis-server');
  return {
    socket,
    owned: true,
    async stop() {
      if (exited) return;
      // SIGTERM makes redis-server flush the AOF and exit cleanly.
      child.kill('SIGTERM');
      await Promise.race([exitPromise, sleep(10_000)]);
      if (!exited) child.kill('SIGKILL');
    },
  };
}
