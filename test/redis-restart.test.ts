import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, it } from 'node:test';
import { startEmbeddedRedis } from '../src/redis.js';
import { createLogger } from '../src/log.js';
import { api, TestWorld } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

const world = new TestWorld();
before(() => world.start());
after(() => world.close());

it('loses no accepted request when Redis restarts (AOF)', async () => {
  const origin = world.origin();
  const hub = await world.spawnHub({
    MAX_THOPTERS: '1',
    HUB_LOCK_DURATION: '4s',
    HUB_STALLED_INTERVAL: '2s',
    LOG_LEVEL: 'warn',
  });
  const launch = (title: string) => api(hub.url, 'POST', '/api/thopters', { repository: origin, title });
  const first = (await launch('first')).body.id;
  await waitFor(
    'first running',
    async () => (await api(hub.url, 'GET', `/api/thopters/${first}`)).body.state === 'running',
  );
  const queued = [(await launch('second')).body.id, (await launch('third')).body.id];

  // Stop and start the same redis-server: everything it knows must come back from its AOF.
  await world.redis.stop();
  world.redis = await startEmbeddedRedis(path.join(world.dir, 'redis'), createLogger('silent'));

  const get = async (id: string) => (await api(hub.url, 'GET', `/api/thopters/${id}`)).body;
  await waitFor('the hub to answer again', async () => (await get(first)).state === 'running', {
    timeoutMs: 60_000,
  });
  for (const id of queued) assert.equal((await get(id)).state, 'queued');

  for (const id of [first, ...queued]) {
    await waitFor(`${id} to run`, async () => (await get(id)).state === 'running', { timeoutMs: 90_000 });
    assert.equal((await api(hub.url, 'DELETE', `/api/thopters/${id}`)).status, 202);
    await waitFor(`${id} destroyed`, async () => (await get(id)).state === 'destroyed', {
      timeoutMs: 60_000,
    });
  }
});
