import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createLogger } from '../src/log.js';
import { startEmbeddedRedis, type EmbeddedRedis } from '../src/redis.js';
import { api, TestWorld, TOKEN, writeFixture } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

const world = new TestWorld();
const dataDirs: string[] = [];
let external: EmbeddedRedis | undefined;
before(() => world.start());
after(async () => {
  for (const dataDir of dataDirs) stopLeftovers(dataDir);
  await external?.stop();
  await world.close();
});

const redisPid = (dataDir: string) =>
  Number(readFileSync(path.join(dataDir, 'redis', 'redis.pid'), 'utf8').trim());

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Ends whatever a failed test left running under `dataDir`: redis-server and tmux servers. */
function stopLeftovers(dataDir: string) {
  try {
    const pid = redisPid(dataDir);
    if (alive(pid)) process.kill(pid, 'SIGKILL');
  } catch {
    // no redis-server was started there
  }
  try {
    for (const id of readdirSync(path.join(dataDir, 'thopters'))) {
      execFileSync('tmux', ['kill-server'], {
        env: { ...process.env, TMUX_TMPDIR: path.join(dataDir, 'thopters', id, 'tmux') },
        stdio: 'ignore',
      });
    }
  } catch {
    // no machines
  }
}

/** A request as a program makes it: the hub's token, JSON. */
async function call(url: string, method: string, route: string, accept = 'application/json') {
  const res = await fetch(`${url}${route}`, {
    method,
    headers: { authorization: `Bearer ${TOKEN}`, accept },
  });
  return {
    status: res.status,
    retryAfter: res.headers.get('retry-after'),
    type: res.headers.get('content-type'),
    text: await res.text(),
  };
}

/** Waits for /health to answer 200 again: the hub is back on a Redis that came back. */
const healthyAgain = (url: string) =>
  waitFor('/health to be 200 again', async () => (await call(url, 'GET', '/health')).status === 200, {
    timeoutMs: 60_000,
  });

const stateOf = async (url: string, id: string) => (await api(url, 'GET', `/api/thopters/${id}`)).body?.state;

async function stopHub(hub: Awaited<ReturnType<TestWorld['spawnHub']>>): Promise<number | null> {
  hub.child.kill('SIGTERM');
  return waitFor('the hub to exit', () => (hub.child.exitCode === null ? false : hub.child.exitCode), {
    timeoutMs: 60_000,
  });
}

/**
 * A spawned hub on its embedded redis-server, running one thopter whose running state is in the
 * AOF (a SIGKILL keeps only what redis-server wrote there). Its redis-server, as the hub finds it on
 * PATH, is held back while the file `hold` exists: the time between a kill and the restart is then
 * as long as the test needs to look at the hub.
 */
async function runningOnHeldRedis(name: string, title: string) {
  const dataDir = path.join(world.dir, name);
  dataDirs.push(dataDir);
  const origin = world.origin(name);
  const bin = path.join(world.dir, `bin-held-redis-${name}`);
  const hold = path.join(world.dir, `hold-${name}`);
  const realRedis = execFileSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).trim();
  writeFixture(
    bin,
    'redis-server',
    `#!/bin/sh\nwhile [ -e '${hold}' ]; do sleep 0.1; done\nexec '${realRedis}' "$@"\n`,
    0o755,
  );
  const hub = await world.spawnHub({ REDIS_URL: '', DATA_DIR: dataDir, PATH: `${bin}:${process.env.PATH}` });
  const launched = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title });
  assert.equal(launched.status, 202);
  const id: string = launched.body.id;
  await waitFor('running', async () => (await stateOf(hub.url, id)) === 'running', { timeoutMs: 120_000 });
  // Its event is written after the state: once the event is there, so is the state.
  const aofDir = path.join(dataDir, 'redis', 'appendonlydir');
  await waitFor('the running state in the AOF', () =>
    readdirSync(aofDir).some((f) =>
      readFileSync(path.join(aofDir, f), 'latin1').includes('the agent is running'),
    ),
  );
  return { dataDir, hub, id, hold };
}

describe('Redis going away', () => {
  it('restarts a killed embedded redis-server; meanwhile /health says so and the API answers 503 with Retry-After', async () => {
    const { dataDir, hub, id, hold } = await runningOnHeldRedis('killed', 'before the kill');

    const killed = redisPid(dataDir);
    writeFixture(path.dirname(hold), path.basename(hold), '');
    // Calls keep coming while Redis dies: one already under way when it goes is a 503 too, not a 500.
    const statuses: number[] = [];
    let calling = true;
    const caller = (async () => {
      while (calling) statuses.push((await call(hub.url, 'GET', '/api/thopters')).status);
    })();
    await waitFor('calls under way', () => statuses.length > 5);
    process.kill(killed, 'SIGKILL');

    // (For an instant the hub may only have seen its connections drop: "reconnecting".)
    const health = await waitFor('/health to report the restart', async () => {
      const r = await call(hub.url, 'GET', '/health');
      return r.status !== 200 && r.text.includes('restarting') ? r : undefined;
    });
    assert.equal(health.status, 503);
    assert.equal(health.retryAfter, '5');
    assert.deepEqual(JSON.parse(health.text), {
      status: 'redis-down',
      redis:
        "the hub's embedded redis-server stopped and the hub is restarting it (if this lasts, see redis.log under DATA_DIR/redis)",
    });
    await waitFor('a call answered 503', () => statuses.includes(503));
    calling = false;
    await caller;
    assert.deepEqual([...new Set(statuses)].sort(), [200, 503]);
    for (const [method, route] of [
      ['GET', '/api/thopters'],
      ['GET', `/api/thopters/${id}`],
      ['DELETE', `/api/thopters/${id}`],
      ['POST', '/login'],
    ] as const) {
      const r = await call(hub.url, method, route);
      assert.equal(r.status, 503, `${method} ${route}: ${r.text}`);
      assert.equal(r.retryAfter, '5');
      assert.equal(JSON.parse(r.text).error.code, 'redis-unavailable');
    }

    rmSync(hold);
    await healthyAgain(hub.url);
    const restarted = redisPid(dataDir);
    assert.notEqual(restarted, killed, 'a new redis-server');
    assert.match(hub.output(), /the embedded redis-server exited; restarting it on its AOF/);
    // The record from before the kill came back from the AOF, and the hub acts on it again.
    assert.equal(await stateOf(hub.url, id), 'running');
    assert.equal((await api(hub.url, 'DELETE', `/api/thopters/${id}`)).status, 202);
    await waitFor('destroyed', async () => (await stateOf(hub.url, id)) === 'destroyed', {
      timeoutMs: 60_000,
    });

    assert.equal(await stopHub(hub), 0, hub.output().slice(-4000));
    assert.equal(alive(restarted), false, 'the hub stopped the redis-server it restarted');
  });

  it('a stop just after the embedded redis-server came back hands the thopter back and exits 0, no worker left closing', async () => {
    const { dataDir, hub, hold } = await runningOnHeldRedis('back', 'back');
    // Down long enough for every connection to wait its longest between attempts (2 s).
    writeFixture(path.dirname(hold), path.basename(hold), '');
    process.kill(redisPid(dataDir), 'SIGKILL');
    await waitFor(
      '/health to report the restart',
      async () => (await call(hub.url, 'GET', '/health')).status === 503,
    );
    const downSince = Date.now();
    await waitFor('a few seconds of Redis down', () => Date.now() - downSince > 5_000, { timeoutMs: 10_000 });
    rmSync(hold);
    await healthyAgain(hub.url);

    const restarted = redisPid(dataDir);
    assert.equal(await stopHub(hub), 0, hub.output().slice(-3000));
    assert.doesNotMatch(hub.output(), /workers still closing/);
    assert.equal(alive(restarted), false, 'the hub stopped the redis-server it restarted');
  });

  it('with an external REDIS_URL that stops: 503s, an error page in the dashboard, and a stop that does not wait for Redis', async () => {
    const dataDir = path.join(world.dir, 'external');
    dataDirs.push(dataDir);
    const origin = world.origin('external');
    const redisDir = path.join(world.dir, 'external-redis');
    external = await startEmbeddedRedis(redisDir, createLogger('silent'));
    // Short locks, so that the thopter this hub cannot hand back is recovered within seconds.
    const env = {
      REDIS_URL: `unix://${external.socket}`,
      DATA_DIR: dataDir,
      HUB_LOCK_DURATION: '4s',
      HUB_STALLED_INTERVAL: '2s',
    };
    const hub = await world.spawnHub(env);
    const launched = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title: 'external' });
    const id: string = launched.body.id;
    await waitFor('running', async () => (await stateOf(hub.url, id)) === 'running', { timeoutMs: 120_000 });

    await external.stop();
    const health = await waitFor('/health to report Redis down', async () => {
      const r = await call(hub.url, 'GET', '/health');
      return r.status !== 200 ? r : undefined;
    });
    assert.equal(health.status, 503);
    assert.match(JSON.parse(health.text).redis, /cannot reach the Redis that REDIS_URL names/);
    const listed = await call(hub.url, 'GET', '/api/thopters');
    assert.equal(listed.status, 503);
    assert.equal(listed.retryAfter, '5');
    assert.match(JSON.parse(listed.text).error.message, /REDIS_URL.*try again shortly/);

    // A browser on the dashboard, signed in or not.
    const page = await call(hub.url, 'GET', '/', 'text/html,application/xhtml+xml,*/*;q=0.8');
    assert.equal(page.status, 503);
    assert.equal(page.retryAfter, '5');
    assert.match(page.type ?? '', /^text\/html/);
    assert.match(page.text, /<h1>Redis is unreachable<\/h1>/);
    assert.match(page.text, /the hub cannot reach the Redis that REDIS_URL names: check that it is running/);
    assert.match(page.text, /Reload this page in a few seconds/);
    // The page's stylesheet does not need Redis.
    assert.equal((await call(hub.url, 'GET', '/assets/dashboard.css', 'text/css')).status, 200);

    // Nothing can be handed back without Redis: the stop gives that up instead of waiting forever.
    assert.equal(await stopHub(hub), 0, hub.output().slice(-3000));
    assert.match(hub.output(), /Redis is unreachable: active thopters were not handed back/);

    external = await startEmbeddedRedis(redisDir, createLogger('silent'));
    const next = await world.spawnHub(env);
    await waitFor(
      'the thopter to be running again',
      async () => (await stateOf(next.url, id)) === 'running',
      {
        timeoutMs: 120_000,
      },
    );
    assert.equal((await api(next.url, 'DELETE', `/api/thopters/${id}`)).status, 202);
    await waitFor('destroyed', async () => (await stateOf(next.url, id)) === 'destroyed', {
      timeoutMs: 60_000,
    });
    assert.equal(await stopHub(next), 0);
    assert.ok(existsSync(external.socket));
  });

  it('a Redis that stops answering cannot hold the stop: the hub says which workers it left, and the next hub recovers', async () => {
    const dataDir = path.join(world.dir, 'frozen');
    dataDirs.push(dataDir);
    const origin = world.origin('frozen');
    const redisDir = path.join(world.dir, 'frozen-redis');
    const frozen = await startEmbeddedRedis(redisDir, createLogger('silent'));
    const pid = Number(readFileSync(path.join(redisDir, 'redis.pid'), 'utf8').trim());
    try {
      const hub = await world.spawnHub({ REDIS_URL: `unix://${frozen.socket}`, DATA_DIR: dataDir });
      const launched = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title: 'frozen' });
      const id: string = launched.body.id;
      await waitFor('running', async () => (await stateOf(hub.url, id)) === 'running', {
        timeoutMs: 120_000,
      });

      // Stopped, not gone: connections stay open and every command waits, so nothing looks down.
      // The hand-back gives up on the worker holding the thopter, and the stop goes on (within
      // its bound: src/main.ts, STOP_BOUND_MS).
      process.kill(pid, 'SIGSTOP');
      assert.equal(await stopHub(hub), 0, hub.output().slice(-3000));
      assert.match(
        hub.output(),
        /"workers":\["lifecycle"\],"msg":"workers still closing: the stop goes on without them/,
      );
      assert.doesNotMatch(hub.output(), /did not stop within/);

      // Redis answers again: the next hub takes the thopter over once its lock has expired.
      process.kill(pid, 'SIGCONT');
      const next = await world.spawnHub({
        REDIS_URL: `unix://${frozen.socket}`,
        DATA_DIR: dataDir,
        HUB_LOCK_DURATION: '4s',
        HUB_STALLED_INTERVAL: '2s',
      });
      assert.equal((await api(next.url, 'DELETE', `/api/thopters/${id}`)).status, 202);
      await waitFor('destroyed', async () => (await stateOf(next.url, id)) === 'destroyed', {
        timeoutMs: 120_000,
      });
      assert.equal(await stopHub(next), 0, next.output().slice(-3000));
    } finally {
      process.kill(pid, 'SIGCONT');
      await frozen.stop();
    }
  });
});
