import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { FlyProvider } from '../src/providers/fly/provider.js';
import type { MachineSpec } from '../src/providers/types.js';
import { startFakeFly, type FakeFly, type FakeFlyOptions } from './fakes/fly.js';
import { TestWorld } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

/**
 * The fly provider against the fake Machines API where Fly's documentation says what it refuses
 * or how it behaves: a wait for `stopped` wants the instance, volumes want unique zones unless told
 * otherwise, a start can find the host full, a volume is freed only once its machine is destroyed,
 * and a machine can stop under a running thopter. No machine boots anything here (no sshd): these
 * are the provider's dealings with the API, which fly.test.ts drives end to end.
 */

const world = new TestWorld();
const FLY_TOKEN = 'fly_provider_test_token_0123';
const APP = 'thopters';
const fakes: FakeFly[] = [];
const providers: FlyProvider[] = [];

async function setup(opts: FakeFlyOptions = {}) {
  const fly = await startFakeFly({ tokens: [FLY_TOKEN], rateLimit: false, ...opts });
  fakes.push(fly);
  const config = loadConfig({
    THOPTER_PROVIDER: 'fly',
    FLY_API_URL: fly.url,
    FLY_API_TOKEN: FLY_TOKEN,
    FLY_API_RATE: 'off',
    APP_NAME: APP,
    REGION: 'ord',
    THOPTER_IMAGE: 'registry.fly.io/thopters:test',
    DATA_DIR: world.dir,
    HUB_REDIS_PREFIX: `fp${fakes.length}`,
    GITHUB_INTEGRATION_JSON: JSON.stringify({ repositories: {} }),
  });
  const provider = new FlyProvider(config, world.client, createLogger('silent'));
  await provider.start();
  providers.push(provider);
  return { fly, provider, config };
}

function spec(): MachineSpec {
  const id = randomUUID().slice(0, 8);
  return {
    id,
    thopterId: `t-${id}`,
    statusToken: 'status-token-for-the-test',
    requestId: `r-${id}`,
    repository: 'acme/widget',
    issueNumber: 7,
    git: { userName: 'Widget Bot', userEmail: 'bot@widget.test' },
  };
}

/** keepUp until it acts: it trusts the app's shared machine list, which may be seconds old. */
function upkeep(provider: FlyProvider, id: string) {
  return waitFor('the provider to see the machine stopped', async () => {
    const u = await provider.keepUp(id);
    return u.kind !== 'running' && u;
  });
}

/** Creates a thopter's machine through the provider and waits until Fly has started it. */
async function started(fly: FakeFly, provider: FlyProvider) {
  const s = spec();
  const info = await provider.create(s);
  const flyId = info.providerId!;
  await waitFor('the machine to start', () => fly.machine(flyId)?.state === 'started');
  return { id: s.id, flyId, volume: fly.machine(flyId)!.config.mounts![0]!.volume };
}

before(() => world.start());
after(async () => {
  await Promise.all(providers.map((p) => p.close()));
  await Promise.all(fakes.map((f) => f.close()));
  await world.close();
});

describe('fly provider: destroy', () => {
  it('stops a started machine gracefully, waiting for `stopped` with its instance_id, and never deletes it with force', async () => {
    const { fly, provider } = await setup();
    const m = await started(fly, provider);
    const instance = fly.machine(m.flyId)!.instance_id;
    await provider.destroy(m.id);

    assert.equal(fly.machine(m.flyId)?.state, 'destroyed');
    const mine = fly.requests.filter((r) => r.path.includes(m.flyId));
    const wait = mine.find((r) => r.action === 'wait' && r.query.state === 'stopped');
    assert.equal(wait?.status, 200, JSON.stringify(mine.map((r) => [r.method, r.query, r.status])));
    assert.equal(wait.query.instance_id, instance);
    const deletes = mine.filter((r) => r.method === 'DELETE');
    assert.deepEqual(
      deletes.map((r) => r.query),
      [{}],
      'one delete, without force: the machine had stopped',
    );
    assert.ok(
      fly.machine(m.flyId)!.events.some((e) => e.type === 'exit' && e.request?.exit_event),
      'its process was stopped, not killed with the machine',
    );
  });
});

describe('fly provider: the volume pool', () => {
  it("grows past the region's zones: 5 concurrent launches where Fly has 2 zones", async () => {
    const { fly, provider } = await setup({ zonesPerRegion: 2 });
    const made = await Promise.all(Array.from({ length: 5 }, () => provider.create(spec())));
    assert.equal(new Set(made.map((m) => m.providerId)).size, 5);
    const volumes = fly.volumes().filter((v) => v.state !== 'destroyed');
    assert.equal(volumes.length, 5);
    assert.ok(
      volumes.every((v) => v.attached_machine_id),
      'each launch mounts its own volume',
    );
    const creates = fly.requests.filter((r) => r.action === 'volume_create');
    assert.ok(
      creates.every((r) => (r.body as { require_unique_zone?: boolean }).require_unique_zone === false),
    );
  });

  it('tries a volume create again when Fly fails it for a passing reason', async () => {
    const { fly, provider } = await setup();
    fly.failNext(1, { method: 'POST', pathPattern: '/v1/apps/*/volumes', status: 503 });
    const m = await started(fly, provider);
    assert.equal(fly.requests.filter((r) => r.action === 'volume_create').length, 2);
    assert.equal(fly.volumes().find((v) => v.id === m.volume)?.attached_machine_id, m.flyId);
  });

  it('reuses the volume a destroyed thopter freed, for a launch right after the destroy', async () => {
    // Fly takes a moment from `destroying` to `destroyed`, and frees the volume only then.
    const { fly, provider } = await setup({ destroyMs: 500 });
    const first = await started(fly, provider);
    await provider.destroy(first.id);
    const second = await started(fly, provider);
    assert.equal(second.volume, first.volume, 'the freed volume, not a new one');
    assert.equal(fly.volumes().length, 1, 'the pool did not grow');
  });
});

describe('fly provider: the volume pool across hubs', () => {
  it('reuses a volume another hub freed, though this hub listed the volumes a moment before', async () => {
    const { fly, provider: a, config } = await setup();
    const b = new FlyProvider(config, world.client, createLogger('silent'));
    providers.push(b);
    const first = await started(fly, a);
    await started(fly, b); // b lists the volumes: first's is taken
    await a.destroy(first.id);
    const third = await started(fly, b);
    assert.equal(third.volume, first.volume, 'the freed volume, not a new one');
    assert.equal(fly.volumes().length, 2);
  });
});

describe('fly provider: boot', () => {
  it('starts a machine whose boot failed again, waiting out a full host (409 could not reserve resource)', async () => {
    let failBoot = true;
    const { fly, provider } = await setup({
      onStart: () => {
        if (!failBoot) return Promise.resolve();
        failBoot = false;
        return Promise.reject(new Error('the boot failed (injected by the test)'));
      },
    });
    const s = spec();
    const flyId = (await provider.create(s)).providerId!;
    await waitFor('the boot to fail', () => fly.machine(flyId)?.state === 'stopped');
    fly.failNextStarts(2);
    // ready() is asked until it says yes, as wait-ready does; a throw is the provision failing.
    let failure: unknown;
    await waitFor('the provider to see the machine ready', () =>
      provider.ready(s.id).catch((err: unknown) => (failure = err)),
    );
    assert.equal(failure, undefined);
    assert.equal(fly.machine(flyId)?.state, 'started');
    assert.equal(fly.requests.filter((r) => r.action === 'start' && r.status === 409).length, 2);
  });
});

describe('fly provider: a running thopter whose machine stops', () => {
  it('starts a crashed machine again, saying why, and again when its host is full for a moment (409)', async () => {
    const { fly, provider } = await setup();
    const m = await started(fly, provider);
    assert.deepEqual(await provider.keepUp(m.id), { kind: 'running' });

    fly.exitMachine(m.flyId, 1);
    await waitFor('the machine to stop', () => fly.machine(m.flyId)?.state === 'stopped');
    const first = await upkeep(provider, m.id);
    assert.equal(first.kind, 'restarted');
    assert.match((first as { reason: string }).reason, /exit code 1: started it again \(1 of 3\)/);
    await waitFor('the machine to run again', () => fly.machine(m.flyId)?.state === 'started');

    fly.exitMachine(m.flyId, 137, { oomKilled: true });
    await waitFor('the machine to stop', () => fly.machine(m.flyId)?.state === 'stopped');
    fly.failNextStarts(2);
    const second = await upkeep(provider, m.id);
    assert.match((second as { reason: string }).reason, /out of memory: started it again \(2 of 3\)/);
    await waitFor('the machine to run again', () => fly.machine(m.flyId)?.state === 'started');
    const starts = fly.requests.filter((r) => r.action === 'start');
    assert.equal(starts.filter((r) => r.status === 409).length, 2, 'the full host was waited out');
  });

  it('reports the machine down, with the reason, once restarts are used up', async () => {
    const { fly, provider } = await setup();
    const m = await started(fly, provider);
    for (let i = 1; i <= 3; i++) {
      fly.exitMachine(m.flyId, 2);
      await waitFor('the machine to stop', () => fly.machine(m.flyId)?.state === 'stopped');
      assert.equal((await upkeep(provider, m.id)).kind, 'restarted');
      await waitFor('the machine to run again', () => fly.machine(m.flyId)?.state === 'started');
    }
    fly.exitMachine(m.flyId, 2);
    await waitFor('the machine to stop', () => fly.machine(m.flyId)?.state === 'stopped');
    const down = await upkeep(provider, m.id);
    assert.equal(down.kind, 'down');
    assert.match((down as { reason: string }).reason, /stopped: exit code 2 after 3 restarts: see `fly logs/);
    assert.equal(fly.machine(m.flyId)?.state, 'stopped', 'not started a fourth time');
  });

  it('does not overrule a stop someone asked Fly for: the machine is reported down', async () => {
    const { fly, provider } = await setup();
    const m = await started(fly, provider);
    const res = await fetch(`${fly.url}/v1/apps/${APP}/machines/${m.flyId}/stop`, {
      method: 'POST',
      headers: { authorization: `Bearer ${FLY_TOKEN}` },
    });
    assert.equal(res.status, 200);
    await waitFor('the machine to stop', () => fly.machine(m.flyId)?.state === 'stopped');
    const down = await upkeep(provider, m.id);
    assert.equal(down.kind, 'down');
    assert.match((down as { reason: string }).reason, /stopped on request, not by the hub/);
    assert.equal(fly.machine(m.flyId)?.state, 'stopped');
  });
});
