import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Redis } from 'ioredis';
import { api, ROOT, TestWorld } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

const world = new TestWorld();
before(() => world.start());
after(() => world.close());

describe('the embedded default', () => {
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
});
