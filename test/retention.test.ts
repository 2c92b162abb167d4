import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ThopterStore } from '../src/thopters/store.js';
import { TranscriptArchive } from '../src/transcripts/archive.js';
import { api, TestWorld, TOKEN } from './helpers/env.js';
import { aRequest } from './helpers/records.js';
import { waitFor } from './helpers/wait.js';

/*
 * THOPTER_RETENTION: a thopter that ended longer ago than it is deleted from Redis (record, events,
 * kept transcripts) by the reconciliation every hub runs at its start and every ten minutes.
 */

const world = new TestWorld();
before(() => world.start());
after(() => world.close());

describe('THOPTER_RETENTION', () => {
  it('deletes the thopters that ended longer ago, with their events and transcripts, and never a live one', async () => {
    const origin = world.origin();
    const hub = await world.hub({ THOPTER_RETENTION: '30d' });
    const launch = async (title: string) => {
      const res = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title });
      assert.equal(res.status, 202, JSON.stringify(res.body));
      return res.body.id as string;
    };
    const state = async (id: string) => (await api(hub.url, 'GET', `/api/thopters/${id}`)).body?.state;
    const ended = await launch('ended');
    const live = await launch('live');
    for (const id of [ended, live])
      await waitFor(`${id} running`, async () => (await state(id)) === 'running', { timeoutMs: 120_000 });
    assert.equal((await api(hub.url, 'DELETE', `/api/thopters/${ended}`)).status, 202);
    await waitFor('destroyed', async () => (await state(ended)) === 'destroyed', { timeoutMs: 60_000 });
    // What its teardown keeps of an agent's session (this test's agent writes none).
    await new TranscriptArchive(world.client, 'tw').keep(ended, [
      { session: 's1', text: '{}\n', cutBytes: 0 },
    ]);
    const keys = [`tw:record:${ended}`, `tw:record:${ended}:events`, `tw:record:${ended}:transcripts`];
    assert.equal(await world.client.exists(...keys), 3);

    // Within 30 days: a hub starting (and so reconciling) keeps it.
    await world.stopHub(hub);
    const keeping = await world.hub({ THOPTER_RETENTION: '30d' });
    assert.equal((await api(keeping.url, 'GET', `/api/thopters/${ended}`)).status, 200);
    await world.stopHub(keeping);

    // With a retention it has outlived, it is gone everywhere a person would look; the live one stays.
    const pruning = await world.hub({ THOPTER_RETENTION: '1ms' });
    assert.equal((await api(pruning.url, 'GET', `/api/thopters/${ended}`)).status, 404);
    const listed = (await api(pruning.url, 'GET', '/api/thopters')).body.thopters.map(
      (t: { id: string }) => t.id,
    );
    assert.deepEqual(listed, [live]);
    const page = await fetch(`${pruning.url}/thopters/${ended}`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assert.equal(page.status, 404);
    assert.equal(await world.client.exists(...keys), 0);
    assert.equal((await api(pruning.url, 'GET', `/api/thopters/${live}`)).body.state, 'running');

    assert.equal((await api(pruning.url, 'DELETE', `/api/thopters/${live}`)).status, 202);
    await waitFor(
      'the live one destroyed',
      async () => (await api(pruning.url, 'GET', `/api/thopters/${live}`)).body?.state === 'destroyed',
      { timeoutMs: 60_000 },
    );
  });

  it('deletes the pull request index entry and branch claim of what it prunes, unless a later thopter holds them', async () => {
    const store = new ThopterStore(world.client, 'tw-prune');
    const at = new Date().toISOString();
    const request = (id: string, workBranch: string) =>
      aRequest({
        id,
        prompt: 'continue',
        createdAt: at,
        continues: { thopterId: 'thopter-first', workBranch, since: at },
      });
    const pr = (number: number) => ({
      number,
      url: `https://github.test/pull/${number}`,
      draft: true,
      base: 'main',
    });
    // `old` carried on branch a with pull request #5; `taken` carried on b, and `newer` holds b now.
    await store.create(request('old', 'thopter/7--a'));
    await store.setPullRequest('old', pr(5));
    await store.finish('old', 'destroyed', 'done');
    await store.create(request('taken', 'thopter/7--b'));
    await store.setPullRequest('taken', pr(6));
    await store.finish('taken', 'destroyed', 'done');
    await store.create(request('newer', 'thopter/7--b'));
    await store.setPullRequest('newer', pr(6));
    const key = (k: string) => `tw-prune:${k}`;
    assert.equal(await world.client.get(key('pull-request:acme/widget#5')), 'old');
    assert.equal(await world.client.get(key('branch-claim:acme/widget\tthopter/7--a')), 'old');

    assert.deepEqual((await store.pruneEnded(Date.now() + 1000)).sort(), ['old', 'taken']);
    assert.equal(await world.client.exists(key('pull-request:acme/widget#5')), 0);
    assert.equal(await world.client.exists(key('branch-claim:acme/widget\tthopter/7--a')), 0);
    assert.equal(await world.client.get(key('pull-request:acme/widget#6')), 'newer');
    assert.equal(await world.client.get(key('branch-claim:acme/widget\tthopter/7--b')), 'newer');
    assert.equal((await store.get('newer'))?.state, 'queued');
  });

  it('refuses a retention that is not a duration, saying how to write one', async () => {
    assert.throws(
      () => world.config({ THOPTER_RETENTION: 'a month' }),
      /THOPTER_RETENTION.*"a month" is not a duration: write it like 90s, 30m, 2h or 1d/,
    );
  });
});
