import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Queue } from 'bullmq';
import { api, TestWorld, writeFixture } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

const world = new TestWorld();
let origin: string;
let fixtures: string;

/** Short locks so that a hub killed with -9 is noticed within seconds. */
const CRASHY = { HUB_LOCK_DURATION: '3s', HUB_STALLED_INTERVAL: '1s', LOG_LEVEL: 'warn' };

before(async () => {
  await world.start();
  origin = world.origin();
  fixtures = path.join(world.dir, 'fixtures');
  // A post-checkout that takes a while, so a kill can land in the middle of provisioning.
  writeFixture(
    fixtures,
    'slow-post-checkout.sh',
    '#!/usr/bin/env bash\nset -eu\necho started >> ../post-checkout.runs\nsleep 2\n',
    0o755,
  );
});
after(() => world.close());

const machinesOf = (thopterId: string) => {
  const root = path.join(world.dir, 'data', 'thopters');
  let ids: string[];
  try {
    ids = readdirSync(root);
  } catch {
    return [];
  }
  return ids.filter((id) => {
    try {
      return JSON.parse(readFileSync(path.join(root, id, 'machine.json'), 'utf8')).thopterId === thopterId;
    } catch {
      return true; // a half-made machine counts: there must be none left over
    }
  });
};

const tmuxSessions = (machineId: string) => {
  const env = { ...process.env, TMUX_TMPDIR: path.join(world.dir, 'data', 'thopters', machineId, 'tmux') };
  return execFileSync('tmux', ['list-sessions', '-F', '#{session_name}'], { env, encoding: 'utf8' })
    .split('\n')
    .filter(Boolean);
};

async function waitState(url: string, id: string, states: string[], timeoutMs = 60_000) {
  return waitFor(
    `${id} to be ${states.join('/')}`,
    async () => {
      const t = (await api(url, 'GET', `/api/thopters/${id}`)).body;
      return states.includes(t?.state) ? t : undefined;
    },
    { timeoutMs },
  );
}

describe('a hub killed with -9', () => {
  // Wherever the kill lands, the restarted hub finishes the thopter with exactly one machine.
  const killPoints: Array<[string, (url: string, id: string) => Promise<unknown>]> = [
    ['right after the launch is accepted', async () => {}],
    [
      'while the machine is being made',
      (url, id) =>
        waitFor(
          'create-machine to start',
          async () => (await api(url, 'GET', `/api/thopters/${id}`)).body.machine,
        ),
    ],
    [
      'during post-checkout',
      (url, id) =>
        waitFor('post-checkout to run', async () => {
          const t = (await api(url, 'GET', `/api/thopters/${id}`)).body;
          return t.phases?.find((p: any) => p.name === 'post-checkout')?.outcome === 'running';
        }),
    ],
    ['while the thopter is running', (url, id) => waitState(url, id, ['running'])],
  ];

  for (const [where, reach] of killPoints) {
    it(`${where}: the restarted hub finishes it, with exactly one machine`, async () => {
      const env = { ...CRASHY, THOPTER_POST_CHECKOUT_SCRIPT: path.join(fixtures, 'slow-post-checkout.sh') };
      const first = await world.spawnHub(env);
      const res = await api(first.url, 'POST', '/api/thopters', {
        repository: origin,
        issueNumber: 7,
        title: where,
      });
      assert.equal(res.status, 202);
      const id = res.body.id as string;
      await reach(first.url, id);
      first.child.kill('SIGKILL');
      await new Promise((r) => first.child.once('exit', r));

      const second = await world.spawnHub(env);
      const t = await waitState(second.url, id, ['running', 'failed'], 90_000);
      assert.equal(t.state, 'running', `${t.endReason}`);
      const machines = machinesOf(id);
      assert.deepEqual(machines, [t.machine.id], 'exactly one machine, the recorded one');
      assert.deepEqual(tmuxSessions(t.machine.id), ['thopter']);
      await waitFor('the work branch on origin', () => world.branches(origin).includes(t.workBranch));

      const del = await api(second.url, 'DELETE', `/api/thopters/${id}`);
      assert.equal(del.status, 202);
      await waitState(second.url, id, ['destroyed']);
      assert.deepEqual(machinesOf(id), []);
      second.child.kill('SIGTERM');
      await new Promise((r) => second.child.once('exit', r));
    });
  }
});

describe('a graceful stop', () => {
  it('hands active thopters back at once, with no stall, and another hub carries on', async () => {
    // Long locks: if the hand-off did not happen, the other hub would only get the job after a minute.
    const env = {
      HUB_LOCK_DURATION: '60s',
      HUB_STALLED_INTERVAL: '30s',
      LOG_LEVEL: 'warn',
      MAX_THOPTERS: '1',
    };
    const a = await world.spawnHub(env);
    const res = await api(a.url, 'POST', '/api/thopters', {
      repository: origin,
      issueNumber: 8,
      title: 'hand me over',
    });
    const id = res.body.id as string;
    const running = await waitState(a.url, id, ['running']);
    const b = await world.spawnHub(env);
    // A launch with a better priority waits for the one slot. When the running thopter is handed
    // back it must get the slot again first: its machine is alive.
    const eager = await api(b.url, 'POST', '/api/thopters', {
      repository: origin,
      title: 'eager',
      priority: 1,
    });
    assert.equal(eager.body.queuePosition, 1);

    a.child.kill('SIGTERM');
    const code = await new Promise((r) => a.child.once('exit', r));
    assert.equal(code, 0, a.output().slice(-2000));

    await waitFor(
      'the other hub to resume it',
      async () => {
        const t = (await api(b.url, 'GET', `/api/thopters/${id}`)).body;
        return t.events.some((e: any) => e.type === 'resumed') ? t : undefined;
      },
      { timeoutMs: 20_000 },
    );
    const queue = new Queue('thopters', { connection: world.client, prefix: 'tw' });
    const job = await queue.getJob(id);
    assert.equal(await job!.getState(), 'active');
    assert.equal(job!.stalledCounter, 0, 'the hand-off counted no stall');
    await queue.close();
    assert.deepEqual(machinesOf(id), [running.machine.id], 'the same machine, still there');
    const waiting = (await api(b.url, 'GET', `/api/thopters/${eager.body.id}`)).body;
    assert.equal(waiting.state, 'queued', "the better-priority launch did not take the live thopter's slot");
    assert.equal(waiting.machine, null);

    await api(b.url, 'DELETE', `/api/thopters/${id}`);
    await waitState(b.url, id, ['destroyed']);
    await waitState(b.url, eager.body.id, ['running']);
    await api(b.url, 'DELETE', `/api/thopters/${eager.body.id}`);
    await waitState(b.url, eager.body.id, ['destroyed']);
  });
});
