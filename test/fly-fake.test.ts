import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startFakeFly, type FakeFly, type FakeFlyOptions, type FlyMachine } from './fakes/fly.js';
import { waitFor } from './helpers/wait.js';

const TOKEN = 'fo1_fake_hub_token_0123456789';
const APP = 'thopters';
const IMAGE = 'registry.fly.io/thopter:deployment-01';
const fakes: FakeFly[] = [];

async function fake(opts: FakeFlyOptions = {}): Promise<FakeFly> {
  const f = await startFakeFly({ tokens: [TOKEN], rateLimit: false, ...opts });
  fakes.push(f);
  return f;
}

after(() => Promise.all(fakes.map((f) => f.close())));

async function call(
  fly: FakeFly,
  path: string,
  opts: { method?: string; auth?: string | null; body?: unknown; raw?: string } = {},
) {
  const auth = opts.auth === undefined ? `Bearer ${TOKEN}` : opts.auth;
  const res = await fetch(`${fly.url}/v1${path}`, {
    method: opts.method ?? 'GET',
    headers: {
      ...(auth === null ? {} : { authorization: auth }),
      ...(opts.body === undefined && opts.raw === undefined ? {} : { 'content-type': 'application/json' }),
    },
    body: opts.raw ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body)),
  });
  const text = await res.text();
  let body: any = text;
  try {
    body = JSON.parse(text);
  } catch {
    // Go's router answers unknown paths in plain text.
  }
  return { status: res.status, headers: res.headers, body };
}

const create = (fly: FakeFly, body: Record<string, unknown>) =>
  call(fly, `/apps/${APP}/machines`, { method: 'POST', body });

async function createStarted(fly: FakeFly, body: Record<string, unknown> = {}): Promise<FlyMachine> {
  const res = await create(fly, { config: { image: IMAGE }, ...body });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  const wait = await call(fly, `/apps/${APP}/machines/${res.body.id}/wait?state=started&timeout=10`);
  assert.equal(wait.status, 200);
  return res.body;
}

describe('fake Fly: auth', () => {
  let fly: FakeFly;
  before(async () => {
    fly = await fake({ apps: [APP, 'other-app'] });
    fly.addToken('FlyV1 fm2_deploy_token_for_other', { apps: ['other-app'] });
  });

  it('answers 401 {"error":"unauthorized"} without a token, with an unknown one, or on an app the token may not touch', async () => {
    for (const auth of [null, 'Bearer nope', `token ${TOKEN}`, 'FlyV1 fm2_deploy_token_for_other']) {
      const res = await call(fly, `/apps/${APP}/machines`, { auth });
      assert.equal(res.status, 401, String(auth));
      assert.deepEqual(res.body, { error: 'unauthorized' });
    }
  });

  it('accepts both Bearer and FlyV1 (comma-separated macaroons) schemes', async () => {
    assert.equal((await call(fly, `/apps/${APP}/machines`, { auth: `FlyV1 ${TOKEN}` })).status, 200);
    const macaroons = 'FlyV1 fm2_discharge,fm2_deploy_token_for_other';
    assert.equal((await call(fly, '/apps/other-app/machines', { auth: macaroons })).status, 200);
  });

  it('answers 404 app not found, a plain-text 404 for unknown paths, and 501 for endpoints it does not model', async () => {
    assert.deepEqual((await call(fly, '/apps/nope/machines')).body, { error: 'app not found' });
    const unknown = await call(fly, '/machines');
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body, '404 page not found\n');
    assert.equal((await call(fly, `/apps/${APP}/machines/abc/lease`, { method: 'POST' })).status, 501);
  });

  it('logs method, path, action and status but never the token', async () => {
    const seen = fly.requests.find((r) => r.authScheme === 'FlyV1' && r.status === 200);
    assert.ok(seen);
    assert.equal(seen.action, 'list');
    assert.doesNotMatch(JSON.stringify(fly.requests), new RegExp(TOKEN));
    assert.ok(fly.requests.every((r) => !JSON.stringify(r).includes('fm2_deploy_token_for_other')));
  });
});

describe('fake Fly: machine lifecycle', () => {
  let fly: FakeFly;
  const started: FlyMachine[] = [];
  const stopped: string[] = [];
  before(async () => {
    fly = await fake({
      bootMs: 30,
      onStart: async (m) => {
        started.push(m);
        return m.config.metadata?.fail
          ? Promise.reject(new Error('sshd did not come up'))
          : { privateIp: '::1' };
      },
      onStop: async (m) => void stopped.push(m.id),
    });
  });

  it('creates a machine in Fly\'s shape, still "created", then boots it through onStart to "started"', async () => {
    const files = [
      { guest_path: '/data/thopter/prompt.md', raw_value: Buffer.from('hi').toString('base64') },
    ];
    const res = await create(fly, {
      region: 'iad',
      config: {
        image: IMAGE,
        env: { ISSUE: 'acme/app#1' },
        guest: { cpu_kind: 'shared', cpus: 1, memory_mb: 512 },
        files,
        metadata: { thopter: 't-1' },
        restart: { policy: 'no' },
        auto_destroy: false,
      },
    });
    assert.equal(res.status, 200);
    const m = res.body;
    assert.match(m.id, /^[0-9a-f]{14}$/);
    assert.match(m.name, /^[a-z]+-[a-z]+-\d{4}$/);
    assert.match(m.instance_id, /^[0-9A-HJKMNP-TV-Z]{26}$/);
    assert.match(m.private_ip, /^fdaa:/);
    assert.match(m.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    assert.equal(m.state, 'created');
    assert.equal(m.region, 'iad');
    assert.deepEqual(m.image_ref.registry, 'registry.fly.io');
    assert.deepEqual(m.events[0], { ...m.events[0], type: 'launch', status: 'created', source: 'user' });
    assert.equal((await call(fly, `/apps/${APP}/machines/${m.id}/wait?state=started`)).status, 200);

    const got = (await call(fly, `/apps/${APP}/machines/${m.id}`)).body;
    assert.equal(got.state, 'started');
    assert.equal(got.private_ip, '::1', 'the address onStart returned');
    const seen = started.find((s) => s.id === m.id)!;
    assert.deepEqual(seen.config.files, files);
    assert.equal(seen.config.env?.ISSUE, 'acme/app#1');
    assert.deepEqual(seen.config.metadata, { thopter: 't-1' });
  });

  it('stops (onStop runs) and starts again, answering start with previous_state', async () => {
    const m = await createStarted(fly);
    assert.deepEqual((await call(fly, `/apps/${APP}/machines/${m.id}/stop`, { method: 'POST' })).body, {
      ok: true,
    });
    const wait = await call(
      fly,
      `/apps/${APP}/machines/${m.id}/wait?state=stopped&instance_id=${m.instance_id}`,
    );
    assert.equal(wait.status, 200);
    assert.ok(stopped.includes(m.id));
    const start = await call(fly, `/apps/${APP}/machines/${m.id}/start`, { method: 'POST' });
    assert.deepEqual(start.body, { previous_state: 'stopped', migrated: false, new_host: '' });
    assert.equal((await call(fly, `/apps/${APP}/machines/${m.id}/wait?state=started`)).status, 200);
    const again = await call(fly, `/apps/${APP}/machines/${m.id}/start`, { method: 'POST' });
    assert.equal(again.status, 412);
  });

  it('refuses to delete a started machine without force, destroys it with force, and then answers 404', async () => {
    const m = await createStarted(fly, { name: 'thopter-acme-app-7' });
    const refused = await call(fly, `/apps/${APP}/machines/${m.id}`, { method: 'DELETE' });
    assert.equal(refused.status, 412);
    assert.match(
      refused.body.error,
      /^failed_precondition: unable to destroy machine, not currently stopped/,
    );
    const del = await call(fly, `/apps/${APP}/machines/${m.id}?force=true`, { method: 'DELETE' });
    assert.deepEqual(del.body, { ok: true });
    assert.equal((await call(fly, `/apps/${APP}/machines/${m.id}/wait?state=destroyed`)).status, 200);
    assert.ok(stopped.includes(m.id));
    assert.deepEqual((await call(fly, `/apps/${APP}/machines/${m.id}`)).body, { error: 'machine not found' });
    const listed = (await call(fly, `/apps/${APP}/machines`)).body.map((x: FlyMachine) => x.id);
    assert.ok(!listed.includes(m.id));
    const all = (await call(fly, `/apps/${APP}/machines?include_deleted=true`)).body;
    assert.equal(all.find((x: FlyMachine) => x.id === m.id)?.state, 'destroyed');
    // The name is free again once the machine is destroyed.
    assert.equal((await create(fly, { name: 'thopter-acme-app-7', config: { image: IMAGE } })).status, 200);
  });

  it('answers 409 already_exists for a name a live machine holds', async () => {
    const m = await createStarted(fly, { name: 'taken' });
    const res = await create(fly, { name: 'taken', config: { image: IMAGE } });
    assert.equal(res.status, 409);
    assert.equal(
      res.body.error,
      `already_exists: unique machine name violation, machine ID ${m.id} already exists with name "taken"`,
    );
  });

  it('leaves a machine "created" with skip_launch, and stops one whose onStart throws, recording why', async () => {
    const cold = (await create(fly, { skip_launch: true, config: { image: IMAGE } })).body;
    const failing = (await create(fly, { config: { image: IMAGE, metadata: { fail: 'yes' } } })).body;
    await waitFor('the failing machine to stop', async () => {
      const got = (await call(fly, `/apps/${APP}/machines/${failing.id}`)).body;
      return got.state === 'stopped' && got;
    });
    const got = (await call(fly, `/apps/${APP}/machines/${failing.id}`)).body;
    assert.equal(got.events[0].type, 'exit');
    assert.equal(got.events[0].request.error, 'sshd did not come up');
    assert.equal((await call(fly, `/apps/${APP}/machines/${cold.id}`)).body.state, 'created');
  });

  it('runs onStop for the machines it booted when it closes', async () => {
    const halted: string[] = [];
    const own = await startFakeFly({
      tokens: [TOKEN],
      onStart: async () => {},
      onStop: async (m) => void halted.push(m.id),
    });
    const m = await createStarted(own);
    const cold = (await create(own, { skip_launch: true, config: { image: IMAGE } })).body;
    await own.close();
    assert.deepEqual(halted, [m.id], 'not the machine that never booted: ' + cold.id);
  });

  it('destroys an auto_destroy machine whose process exits', async () => {
    const m = await createStarted(fly, { config: { image: IMAGE, auto_destroy: true } });
    fly.exitMachine(m.id, 1);
    assert.equal((await call(fly, `/apps/${APP}/machines/${m.id}/wait?state=destroyed`)).status, 200);
    assert.equal(fly.machine(m.id)?.state, 'destroyed');
  });
});

describe('fake Fly: wait', () => {
  let fly: FakeFly;
  before(async () => {
    fly = await fake();
  });

  it('answers 408 with the current state when the timeout passes first', async () => {
    const m = (await create(fly, { skip_launch: true, config: { image: IMAGE } })).body;
    const res = await call(fly, `/apps/${APP}/machines/${m.id}/wait?state=started&timeout=1`);
    assert.equal(res.status, 408);
    assert.deepEqual(res.body, {
      error: 'machine failed to reach desired state, started, currently created',
    });
  });

  it('answers 400 for a bad state or a timeout outside [1, 60] seconds, and 404 for an unknown machine', async () => {
    const m = (await create(fly, { config: { image: IMAGE } })).body;
    const bad = await call(fly, `/apps/${APP}/machines/${m.id}/wait?state=running`);
    assert.equal(bad.status, 400);
    const long = await call(fly, `/apps/${APP}/machines/${m.id}/wait?timeout=61`);
    assert.equal(long.status, 400);
    assert.equal(
      long.body.error,
      'invalid_argument: invalid WaitMachineRequest.Timeout: value must be inside range [1s, 1m0s]',
    );
    assert.equal((await call(fly, `/apps/${APP}/machines/00000000000000/wait`)).status, 404);
  });

  it('refuses a wait for `stopped` without instance_id, as the docs say it is required', async () => {
    const m = await createStarted(fly);
    const bare = await call(fly, `/apps/${APP}/machines/${m.id}/wait?state=stopped&timeout=1`);
    assert.equal(bare.status, 400);
    assert.deepEqual(bare.body, {
      error: 'invalid_argument: instance_id is required when waiting for the stopped state',
    });
    const withInstance = `/apps/${APP}/machines/${m.id}/wait?state=stopped&timeout=1&instance_id=${m.instance_id}`;
    assert.equal((await call(fly, withInstance)).status, 408, 'accepted, and the machine still runs');
  });

  it('accepts several states as fly-go sends them', async () => {
    const m = (await create(fly, { skip_launch: true, config: { image: IMAGE } })).body;
    const res = await call(fly, `/apps/${APP}/machines/${m.id}/wait?state=started&state=settled&timeout=5`);
    assert.equal(res.status, 200);
  });
});

describe('fake Fly: listing', () => {
  let fly: FakeFly;
  before(async () => {
    fly = await fake();
  });

  it('filters by metadata.{key}, region and state, and shows machines someone else made', async () => {
    await create(fly, { region: 'ord', config: { image: IMAGE, metadata: { 'thopter-swarm': 'hub-1' } } });
    await create(fly, {
      region: 'ams',
      skip_launch: true,
      config: { image: IMAGE, metadata: { 'thopter-swarm': 'hub-1' } },
    });
    await create(fly, { region: 'ord', config: { image: IMAGE, metadata: { other: 'x' } } });
    const stray = fly.addMachine({ config: { metadata: { 'thopter-swarm': 'hub-1' } } });

    const ours = (await call(fly, `/apps/${APP}/machines?metadata.thopter-swarm=hub-1`)).body;
    assert.equal(ours.length, 3);
    assert.ok(ours.some((m: FlyMachine) => m.id === stray.id && m.state === 'started'));
    const ams = (await call(fly, `/apps/${APP}/machines?metadata.thopter-swarm=hub-1&region=ams`)).body;
    assert.deepEqual(
      ams.map((m: FlyMachine) => m.region),
      ['ams'],
    );
    const created = (await call(fly, `/apps/${APP}/machines?state=created`)).body;
    assert.deepEqual(
      created.map((m: FlyMachine) => m.region),
      ['ams'],
    );
  });
});

describe('fake Fly: request bodies', () => {
  let fly: FakeFly;
  before(async () => {
    fly = await fake();
  });

  it('refuses a create without config.image with 422', async () => {
    for (const body of [{}, { config: {} }, { config: { image: '' } }]) {
      const res = await create(fly, body);
      assert.equal(res.status, 422);
      assert.deepEqual(res.body, { error: 'config.image is required' });
    }
  });

  it("refuses ill-typed fields with Go's encoding/json messages", async () => {
    const cpus = await create(fly, { config: { image: IMAGE, guest: { cpu_kind: 'shared', cpus: '2' } } });
    assert.equal(cpus.status, 400);
    assert.equal(
      cpus.body.error,
      'json: cannot unmarshal string into Go struct field createMachineRequest.config.guest.cpus of type int',
    );
    const memory = await create(fly, {
      config: { image: IMAGE, guest: { cpu_kind: 'shared', memory_mb: 512.5 } },
    });
    assert.match(
      memory.body.error,
      /cannot unmarshal number 512\.5 into Go struct field .*guest\.memory_mb of type int$/,
    );
    const env = await create(fly, { config: { image: IMAGE, env: { PORT: 22 } } });
    assert.match(env.body.error, /cannot unmarshal number into Go struct field .*config\.env of type string/);
    const array = await call(fly, `/apps/${APP}/machines`, { method: 'POST', body: [] });
    assert.deepEqual(array.body, {
      error: 'json: cannot unmarshal array into Go value of type main.createMachineRequest',
    });
    const notJson = await call(fly, `/apps/${APP}/machines`, { method: 'POST', raw: 'image=x' });
    assert.equal(notJson.status, 400);
  });

  it('refuses files that are not base64 or not absolute, two mounts, and a memory size not a multiple of 256', async () => {
    const bad = [
      { files: [{ guest_path: '/a', raw_value: 'not base64!' }] },
      { files: [{ guest_path: 'relative', raw_value: 'aGk=' }] },
      { files: [{ guest_path: '/a' }] },
      {
        mounts: [
          { volume: 'vol_a', path: '/a' },
          { volume: 'vol_b', path: '/b' },
        ],
      },
      { guest: { cpu_kind: 'shared', cpus: 1, memory_mb: 300 } },
    ];
    for (const config of bad) {
      const res = await create(fly, { config: { image: IMAGE, ...config } });
      assert.equal(res.status, 400, JSON.stringify(config));
      assert.match(res.body.error, /^invalid_argument: /);
    }
  });
});

describe('fake Fly: volumes', () => {
  let fly: FakeFly;
  before(async () => {
    fly = await fake();
  });

  const createVolume = (body: unknown) => call(fly, `/apps/${APP}/volumes`, { method: 'POST', body });

  it("creates volumes in Fly's shape, allowing repeated names", async () => {
    const a = await createVolume({ name: 'thopter_data', region: 'ord', size_gb: 10 });
    const b = await createVolume({ name: 'thopter_data', region: 'ord' });
    assert.equal(a.status, 200);
    assert.match(a.body.id, /^vol_[0-9a-z]{16}$/);
    assert.equal(a.body.state, 'created');
    assert.equal(a.body.size_gb, 10);
    assert.equal(b.body.size_gb, 3, "Fly's default size");
    assert.equal(a.body.attached_machine_id, null);
    assert.equal((await call(fly, `/apps/${APP}/volumes`)).body.length, 2);
    assert.equal((await createVolume({ name: 'thopter-data' })).status, 400);
  });

  it('attaches a mounted volume, refuses it to a second machine or another region, and frees it when the machine is destroyed', async () => {
    const vol = (await createVolume({ name: 'work', region: 'ord' })).body;
    const mounts = [{ volume: vol.id, path: '/data' }];
    const m = await createStarted(fly, { config: { image: IMAGE, mounts } });
    assert.equal(m.region, 'ord', "the volume's region");
    assert.equal((await call(fly, `/apps/${APP}/volumes/${vol.id}`)).body.attached_machine_id, m.id);

    const claimed = await create(fly, { config: { image: IMAGE, mounts } });
    assert.deepEqual(claimed.body, { error: 'failed_precondition: volume already claimed' });
    assert.equal(claimed.status, 412);
    const elsewhere = (await createVolume({ name: 'work', region: 'ams' })).body;
    const wrongRegion = await create(fly, {
      region: 'ord',
      config: { image: IMAGE, mounts: [{ volume: elsewhere.id, path: '/d' }] },
    });
    assert.equal(wrongRegion.status, 412);

    const bound = await call(fly, `/apps/${APP}/volumes/${vol.id}`, { method: 'DELETE' });
    assert.equal(bound.status, 412);
    assert.equal(bound.body.error, `failed_precondition: volume is currently bound to machine: ${m.id}`);

    await call(fly, `/apps/${APP}/machines/${m.id}?force=true`, { method: 'DELETE' });
    await call(fly, `/apps/${APP}/machines/${m.id}/wait?state=destroyed`);
    assert.equal((await call(fly, `/apps/${APP}/volumes/${vol.id}`)).body.attached_machine_id, null);
    const del = await call(fly, `/apps/${APP}/volumes/${vol.id}`, { method: 'DELETE' });
    assert.equal(del.status, 200);
    assert.equal(del.body.state, 'destroyed');
    assert.deepEqual((await call(fly, `/apps/${APP}/volumes/${vol.id}`)).body, { error: 'volume not found' });
    assert.ok(!(await call(fly, `/apps/${APP}/volumes`)).body.some((v: { id: string }) => v.id === vol.id));
    assert.equal(fly.volumes().find((v) => v.id === vol.id)?.state, 'destroyed', 'still seen by the test');
  });
});

describe('fake Fly: volume zones', () => {
  it('places same-named volumes in unique zones by default, and answers 412 once the zones are used up', async () => {
    const fly = await fake({ zonesPerRegion: 2 });
    const createVolume = (body: unknown) => call(fly, `/apps/${APP}/volumes`, { method: 'POST', body });
    const a = await createVolume({ name: 'data', region: 'ord' });
    const b = await createVolume({ name: 'data', region: 'ord' });
    assert.match(a.body.zone, /^[0-9a-f]{4}$/);
    assert.notEqual(a.body.zone, b.body.zone);
    const full = await createVolume({ name: 'data', region: 'ord' });
    assert.equal(full.status, 412);
    assert.deepEqual(full.body, { error: 'failed_precondition: no unique zones available' });
    assert.equal((await createVolume({ name: 'other', region: 'ord' })).status, 200, 'another name');
    assert.equal((await createVolume({ name: 'data', region: 'ams' })).status, 200, 'another region');
    const shared = await createVolume({ name: 'data', region: 'ord', require_unique_zone: false });
    assert.equal(shared.status, 200);
    assert.ok([a.body.zone, b.body.zone].includes(shared.body.zone));
  });

  it('keeps a volume attached while its machine is destroying, and frees it once destroyed', async () => {
    const fly = await fake({ destroyMs: 300 });
    const vol = (await call(fly, `/apps/${APP}/volumes`, { method: 'POST', body: { name: 'v' } })).body;
    const m = await createStarted(fly, {
      config: { image: IMAGE, mounts: [{ volume: vol.id, path: '/d' }] },
    });
    await call(fly, `/apps/${APP}/machines/${m.id}?force=true`, { method: 'DELETE' });
    assert.equal(fly.machine(m.id)?.state, 'destroying');
    assert.equal((await call(fly, `/apps/${APP}/volumes/${vol.id}`)).body.attached_machine_id, m.id);
    assert.equal((await call(fly, `/apps/${APP}/machines/${m.id}/wait?state=destroyed`)).status, 200);
    assert.equal((await call(fly, `/apps/${APP}/volumes/${vol.id}`)).body.attached_machine_id, null);
  });
});

describe('fake Fly: rate limits', () => {
  it('answers 429 with retry-after past the burst, per action and per machine', async () => {
    const fly = await fake({ rateLimit: { perSecond: 0.5, burst: 2, getPerSecond: 0.5, getBurst: 3 } });
    const a = fly.addMachine();
    const b = fly.addMachine();
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await call(fly, `/apps/${APP}/machines/${a.id}`)).status);
    assert.deepEqual(statuses, [200, 200, 200, 429]);
    const limited = await call(fly, `/apps/${APP}/machines/${a.id}`);
    assert.deepEqual(limited.body, { error: 'rate limit exceeded' });
    assert.match(limited.headers.get('retry-after') ?? '', /^\d+$/);
    assert.equal((await call(fly, `/apps/${APP}/machines/${b.id}`)).status, 200, 'another machine');
    assert.equal((await call(fly, `/apps/${APP}/machines`)).status, 200, 'another action');
  });

  it("defaults to Fly's documented limits: a burst of 3 creates", async () => {
    const fly = await fake({ rateLimit: undefined });
    const statuses = [];
    for (let i = 0; i < 4; i++) statuses.push((await create(fly, { config: { image: IMAGE } })).status);
    assert.deepEqual(statuses, [200, 200, 200, 429]);
  });

  it('does not limit with rateLimit: false', async () => {
    const fly = await fake({ rateLimit: false });
    for (let i = 0; i < 20; i++) assert.equal((await call(fly, `/apps/${APP}/machines`)).status, 200);
  });
});

describe('fake Fly: faults', () => {
  let fly: FakeFly;
  before(async () => {
    fly = await fake();
  });

  it('fails the next creates as Fly does when out of capacity, then creates again', async () => {
    fly.failNextCreates(1);
    const res = await create(fly, { config: { image: IMAGE } });
    assert.equal(res.status, 422);
    assert.deepEqual(res.body, { error: 'could not find a candidate host', status: 'insufficient_capacity' });
    assert.equal((await create(fly, { config: { image: IMAGE } })).status, 200);

    const vol = (await call(fly, `/apps/${APP}/volumes`, { method: 'POST', body: { name: 'v' } })).body;
    fly.failNextCreates(1, 'volume_host_full');
    const pinned = await create(fly, { config: { image: IMAGE, mounts: [{ volume: vol.id, path: '/d' }] } });
    assert.equal(pinned.status, 412);
    assert.equal(
      pinned.body.error,
      `insufficient resources to create new machine with existing volume '${vol.id}'`,
    );
  });

  it('can answer 503 for a create that went through anyway', async () => {
    const before = fly.machines().length;
    fly.failNextCreates(1, 503, { committed: true });
    const res = await create(fly, { name: 'ambiguous', config: { image: IMAGE } });
    assert.equal(res.status, 503);
    assert.equal(fly.machines().length, before + 1);
    assert.ok(fly.machines().some((m) => m.name === 'ambiguous'));
  });

  it('answers start with 409 "could not reserve resource" when told the host is full, then starts', async () => {
    const m = await createStarted(fly);
    await call(fly, `/apps/${APP}/machines/${m.id}/stop`, { method: 'POST' });
    await call(fly, `/apps/${APP}/machines/${m.id}/wait?state=stopped&instance_id=${m.instance_id}`);
    fly.failNextStarts(1);
    const full = await call(fly, `/apps/${APP}/machines/${m.id}/start`, { method: 'POST' });
    assert.equal(full.status, 409);
    assert.match(full.body.error, /^aborted: could not reserve resource for machine: insufficient memory/);
    assert.equal(fly.machine(m.id)?.state, 'stopped');
    assert.equal((await call(fly, `/apps/${APP}/machines/${m.id}/start`, { method: 'POST' })).status, 200);
  });

  it('records why a machine exited: its exit code, and whether it ran out of memory', async () => {
    const m = await createStarted(fly);
    fly.exitMachine(m.id, 137, { oomKilled: true });
    const exit = await waitFor('the exit', () => fly.machine(m.id)?.events.find((e) => e.type === 'exit'));
    assert.equal(fly.machine(m.id)?.state, 'stopped');
    assert.deepEqual(
      { ...(exit.request?.exit_event as object), exited_at: undefined },
      { exit_code: 137, oom_killed: true, requested_stop: false, exited_at: undefined },
    );
  });

  it('injects a status on matching requests only, before auth', async () => {
    fly.failNext(2, { method: 'GET', pathPattern: '/v1/apps/*/machines', status: 502 });
    assert.equal((await call(fly, `/apps/${APP}/machines`, { method: 'POST', body: {} })).status, 422);
    assert.equal((await call(fly, `/apps/${APP}/machines`, { auth: null })).status, 502);
    const second = await call(fly, `/apps/${APP}/machines`);
    assert.equal(second.status, 502);
    assert.deepEqual(second.body, { error: 'bad gateway' });
    assert.equal((await call(fly, `/apps/${APP}/machines`)).status, 200);
  });
});
