import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { api, ROOT, TestWorld } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

const world = new TestWorld();
/** tsx by absolute path, for a hub started outside the repository folder. */
const TSX = path.join(ROOT, 'node_modules', 'tsx', 'dist', 'esm', 'index.mjs');
before(() => world.start());
after(() => world.close());

describe('starting the hub', () => {
  it('starts its own redis-server under DATA_DIR (unix socket only, AOF, noeviction), runs a thopter, and stops it on exit', async () => {
    const dataDir = path.join(world.dir, 'embedded');
    const origin = world.origin('embedded');
    const hub = await world.spawnHub({ REDIS_URL: '', DATA_DIR: dataDir });
    const socket = path.join(dataDir, 'redis', 'redis.sock');
    assert.ok(existsSync(socket));
    const redis = new Redis({ path: socket });
    assert.deepEqual(await redis.config('GET', 'appendonly'), ['appendonly', 'yes']);
    assert.deepEqual(await redis.config('GET', 'maxmemory-policy'), ['maxmemory-policy', 'noeviction']);
    assert.deepEqual(await redis.config('GET', 'port'), ['port', '0'], 'no TCP port at all');
    redis.disconnect();

    const res = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title: 'on the default' });
    assert.equal(res.status, 202);
    await waitFor(
      'running',
      async () => (await api(hub.url, 'GET', `/api/thopters/${res.body.id}`)).body.state === 'running',
    );

    hub.child.kill('SIGTERM');
    assert.equal(await new Promise((r) => hub.child.once('exit', r)), 0);
    const probe = new Redis({
      path: socket,
      lazyConnect: true,
      retryStrategy: () => null,
      maxRetriesPerRequest: 0,
    });
    probe.on('error', () => {});
    await assert.rejects(probe.connect(), 'the embedded redis-server stopped with the hub');
    probe.disconnect();
  });

  it('says how to install redis-server when it is missing', () => {
    const bin = path.join(world.dir, 'bin-without-redis');
    mkdirSync(bin);
    symlinkSync(process.execPath, path.join(bin, 'node'));
    const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/main.ts')], {
      cwd: ROOT,
      env: { PATH: bin, HOME: world.dir, DATA_DIR: path.join(world.dir, 'no-redis'), HUB_PORT: '0' },
      encoding: 'utf8',
    });
    assert.equal(r.status, 69, r.stderr);
    assert.match(r.stderr, /redis-server was not found.*apt-get install -y redis-server.*REDIS_URL/s);
  });

  it('stops at start naming a bad variable and the fix', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/main.ts')], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH,
        HOME: world.dir,
        DATA_DIR: path.join(world.dir, 'bad'),
        MAX_THOPTERS: 'lots',
      },
      encoding: 'utf8',
    });
    assert.equal(r.status, 78);
    assert.match(
      r.stderr,
      /MAX_THOPTERS must be a whole number from 1 to 10000 \(got "lots"\): set it in \.env/,
    );
    assert.equal(existsSync(path.join(world.dir, 'bad')), false, 'nothing was created');
  });

  it('reads .env from the folder it starts in', () => {
    const folder = path.join(world.dir, 'with-dotenv');
    mkdirSync(folder);
    writeFileSync(path.join(folder, '.env'), 'MAX_THOPTERS=many\n');
    const r = spawnSync(process.execPath, ['--import', TSX, path.join(ROOT, 'src/main.ts')], {
      cwd: folder,
      env: { PATH: process.env.PATH, HOME: world.dir },
      encoding: 'utf8',
    });
    assert.equal(r.status, 78, r.stderr);
    assert.match(r.stderr, /MAX_THOPTERS must be a whole number from 1 to 10000 \(got "many"\)/);
  });

  it('says plainly that HUB_PORT is in use, and exits', async () => {
    const { createServer } = await import('node:net');
    const busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve));
    const port = (busy.address() as { port: number }).port;
    try {
      const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/main.ts')], {
        cwd: ROOT,
        env: {
          PATH: process.env.PATH,
          HOME: world.dir,
          ...world.env({
            DATA_DIR: path.join(world.dir, 'busy-port'),
            HUB_PORT: String(port),
            LOG_LEVEL: 'info',
          }),
        },
        encoding: 'utf8',
      });
      assert.equal(r.status, 69, r.stderr);
      assert.match(r.stderr, new RegExp(`^port ${port} is in use: set HUB_PORT to a free port`, 'm'));
      assert.doesNotMatch(r.stdout + r.stderr, /EADDRINUSE/, 'no raw error in a JSON log line');
    } finally {
      busy.close();
    }
  });

  it('generates HUB_API_TOKEN when unset, prints it once, and keeps it for the next start', async () => {
    const dataDir = path.join(world.dir, 'token');
    const first = await world.spawnHub({ HUB_API_TOKEN: '', DATA_DIR: dataDir });
    const printed = /HUB_API_TOKEN was not set, so the hub generated one[^\n]*:\n\n\s+(\S+)/.exec(
      first.output(),
    );
    assert.ok(printed, first.output());
    const token = printed[1]!;
    assert.equal((await api(first.url, 'GET', '/api/thopters', undefined, token)).status, 200);
    assert.equal(statSync(path.join(dataDir, 'hub-api-token')).mode & 0o777, 0o600);
    assert.doesNotMatch(
      first.output().replace(printed[0], ''),
      new RegExp(token),
      'printed once, never logged',
    );
    first.child.kill('SIGTERM');
    await new Promise((r) => first.child.once('exit', r));

    const second = await world.spawnHub({ HUB_API_TOKEN: '', DATA_DIR: dataDir });
    assert.doesNotMatch(second.output(), /generated/);
    assert.equal((await api(second.url, 'GET', '/api/thopters', undefined, token)).status, 200);
  });
});
