import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, it } from 'node:test';
import { api, TestWorld } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

const MAX = 5;
const world = new TestWorld();
let hubs: string[] = [];
let origin: string;

before(async () => {
  await world.start();
  origin = world.origin();
  const env = { MAX_THOPTERS: String(MAX), LOG_LEVEL: 'warn' };
  hubs = (await Promise.all([world.spawnHub(env), world.spawnHub(env), world.spawnHub(env)])).map(
    (h) => h.url,
  );
});
after(() => world.close());

/** What is live right now, counted three ways: machines on disk, live records, active lifecycle jobs. */
async function live() {
  let machines = 0;
  try {
    machines = readdirSync(path.join(world.dir, 'data', 'thopters')).length;
  } catch {
    // none yet
  }
  const ids = await world.client.zrange('tw:records:index', '0', '-1');
  const pipeline = world.client.pipeline();
  for (const id of ids) pipeline.hget(`tw:record:${id}`, 'state');
  const states = ((await pipeline.exec()) ?? []).map(([, s]) => s as string);
  const records = states.filter((s) => ['provisioning', 'running', 'stopping'].includes(s)).length;
  const active = await world.client.llen('tw:thopters:active');
  return { machines, records, active, n: Math.max(machines, records, active) };
}

it('never exceeds MAX_THOPTERS with three hubs and 50 launches, and starts them in priority order', async () => {
  let peak = 0;
  let peakAt = {};
  let sampling = true;
  const samples: number[] = [];
  const sampler = (async () => {
    while (sampling) {
      const s = await live();
      samples.push(s.n);
      if (s.n > peak) peakAt = s;
      peak = Math.max(peak, s.n);
      await new Promise((r) => setTimeout(r, 20));
    }
  })();

  const launch = (i: number, priority: number) =>
    api(hubs[i % hubs.length]!, 'POST', '/api/thopters', {
      repository: origin,
      issueNumber: i + 1,
      title: `task ${i + 1}`,
      priority,
    }).then((r) => {
      assert.equal(r.status, 202, JSON.stringify(r.body));
      return { id: r.body.id as string, priority };
    });

  // Five first, to fill every slot; the other 45 wait, with three priorities in mixed order.
  const blockers = await Promise.all([0, 1, 2, 3, 4].map((i) => launch(i, 100)));
  await waitFor('five running', async () => {
    const all = await Promise.all(blockers.map((b) => api(hubs[0]!, 'GET', `/api/thopters/${b.id}`)));
    return all.every((r) => r.body.state === 'running');
  });
  const groups = [1, 50, 900];
  const waiting = await Promise.all(
    Array.from({ length: 45 }, (_, k) => launch(5 + k, groups[(k * 7) % 3]!)),
  );

  // A destroy goes through while every slot is full: one more launch, taken out of the line.
  const extra = await launch(50, 900);
  const del = await api(hubs[1]!, 'DELETE', `/api/thopters/${extra.id}`);
  assert.equal(del.status, 202);
  const gone = await waitFor('the queued thopter to be destroyed', async () => {
    const t = (await api(hubs[2]!, 'GET', `/api/thopters/${extra.id}`)).body;
    return t.state === 'destroyed' ? t : undefined;
  });
  assert.equal(gone.startedAt, null, 'it never took a slot');
  assert.ok((await live()).n <= MAX);

  // Each thopter is destroyed once it runs, through whichever hub; the line moves on.
  const all = [...blockers, ...waiting];
  const done = new Set<string>();
  const started = new Map<string, number>();
  await waitFor(
    'all 50 thopters to run and be destroyed',
    async () => {
      const list = (await api(hubs[0]!, 'GET', '/api/thopters?limit=100')).body.thopters as any[];
      for (const t of list) {
        if (t.startedAt) started.set(t.id, Date.parse(t.startedAt));
        if (t.state === 'running' && !done.has(t.id)) {
          done.add(t.id);
          const r = await api(hubs[done.size % 3]!, 'DELETE', `/api/thopters/${t.id}`);
          assert.equal(r.status, 202);
        }
        assert.notEqual(t.state, 'failed', `${t.id} failed: ${t.endReason}`);
      }
      return all.every((x) => list.find((t) => t.id === x.id)?.state === 'destroyed');
    },
    { timeoutMs: 300_000, intervalMs: 200 },
  );
  sampling = false;
  await sampler;

  assert.ok(samples.length > 100, `sampled often enough (${samples.length})`);
  assert.ok(peak <= MAX, `live thopters peaked at ${JSON.stringify(peakAt)}, above MAX_THOPTERS=${MAX}`);
  assert.equal(peak, MAX, 'the slots were used');
  assert.equal(done.size, 50, 'all 50 ran');

  const startOf = (p: number) =>
    waiting
      .filter((w) => w.priority === p)
      .map((w) => started.get(w.id)!)
      .sort((a, b) => a - b);
  const [high, mid, low] = groups.map(startOf) as [number[], number[], number[]];
  const median = (xs: number[]) => xs[Math.floor(xs.length / 2)]!;
  assert.ok(high.at(-1)! < low[0]!, 'every priority-1 thopter started before any priority-900 one');
  assert.ok(
    median(high) < median(mid) && median(mid) < median(low),
    'the middle priority started in between',
  );
  assert.equal(readdirSync(path.join(world.dir, 'data', 'thopters')).length, 0, 'no machine is left');
});
