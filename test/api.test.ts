import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import type { Hub } from '../src/hub.js';
import { api, ROOT, TestWorld } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

const world = new TestWorld();
let hub: Hub;
let origin: string;

before(async () => {
  await world.start();
  origin = world.origin();
  hub = await world.hub({ MAX_THOPTERS: '1' });
});
after(() => world.close());

/** Everything a bad request must leave untouched: no record, no job in any queue. */
async function snapshot() {
  // Our records and their index; BullMQ's own bookkeeping keys (stalled checks) come and go.
  const keys = await world.client.keys('tw:record*');
  const jobs = await Promise.all(
    Object.values(hub.queues.queues).map(async (q) =>
      Object.values(await q.getJobCounts()).reduce((a, b) => a + b, 0),
    ),
  );
  return { records: (await hub.store.list()).length, jobs, keys: keys.sort() };
}

describe('bad API input gets a clear 4xx and changes nothing', () => {
  let before_: Awaited<ReturnType<typeof snapshot>>;
  beforeEach(async () => {
    before_ = await snapshot();
  });
  const unchanged = async () => assert.deepEqual(await snapshot(), before_);

  const cases: Array<[string, unknown, number, RegExp]> = [
    ['a missing repository', { title: 't' }, 400, /repository/],
    ['a missing title with no issue', { repository: 'acme/x' }, 400, /title/],
    [
      'an issue of a repository the hub does not watch',
      { repository: 'acme/x', issueNumber: 3 },
      422,
      /not in GITHUB_INTEGRATION_JSON/,
    ],
    ['a wrong type', { repository: 'acme/x', title: 't', issueNumber: 'seven' }, 400, /issueNumber/],
    ['a negative priority', { repository: 'acme/x', title: 't', priority: -1 }, 400, /priority/],
    ['an unknown field', { repository: 'acme/x', title: 't', colour: 'blue' }, 400, /colour|Unrecognized/],
    ['an unknown prompt', { repository: 'acme/x', title: 't', prompt: 'nope' }, 422, /prompt.*nope.*default/],
    [
      'a prompt path with ../',
      { repository: 'acme/x', title: 't', prompt: '../../etc/passwd' },
      400,
      /prompt/,
    ],
    [
      'a javascript: issue link',
      { repository: 'acme/x', title: 't', url: 'javascript:fetch("/api/intake/pause")' },
      400,
      /url: must be an http\(s\) URL/,
    ],
    ['a data: issue link', { repository: 'acme/x', title: 't', url: 'data:text/html,x' }, 400, /url/],
    ['a golden claude name with ../', { repository: 'acme/x', title: 't', gc: '../root' }, 400, /gc/],
    ['an unknown golden claude', { repository: 'acme/x', title: 't', gc: 'nobody' }, 422, /gc.*nobody/],
    ['a repository with ../', { repository: '../../etc', title: 't' }, 422, /repository/],
    [
      'a credential in the repository URL',
      { repository: 'https://user:secret@example.com/r.git', title: 't' },
      422,
      /credentials/,
    ],
    [
      'a local path that does not exist, in the words used for one that does',
      { repository: '/no/such/repo.git', title: 't' },
      422,
      /^repository: \/no\/such\/repo\.git is not a repository under THOPTER_LOCAL_REPOSITORIES/,
    ],
    [
      "a local path outside THOPTER_LOCAL_REPOSITORIES (the hub's own source)",
      { repository: ROOT, title: 't' },
      422,
      /is not a repository under THOPTER_LOCAL_REPOSITORIES: add its folder there/,
    ],
    [
      'a way out of THOPTER_LOCAL_REPOSITORIES through ..',
      { repository: `${world.dir}/../..${ROOT}`, title: 't' },
      422,
      /is not a repository under THOPTER_LOCAL_REPOSITORIES/,
    ],
  ];
  for (const [what, body, status, message] of cases) {
    it(`refuses ${what}`, async () => {
      const res = await api(hub.url, 'POST', '/api/thopters', body);
      assert.equal(res.status, status, JSON.stringify(res.body));
      assert.match(res.body.error.message, message);
      await unchanged();
    });
  }

  it('refuses a body that is not JSON', async () => {
    const res = await api(hub.url, 'POST', '/api/thopters', '{"repository": ');
    assert.equal(res.status, 400);
    assert.match(res.body.error.message, /not valid JSON/);
    await unchanged();
  });

  it('refuses an oversized body before reading it all', async () => {
    const res = await api(hub.url, 'POST', '/api/thopters', {
      repository: origin,
      title: 't',
      body: 'x'.repeat(600_000),
    });
    assert.equal(res.status, 413);
    await unchanged();
  });

  it('refuses a request with no token, or the wrong one', async () => {
    const none = await fetch(`${hub.url}/api/thopters`);
    assert.equal(none.status, 401);
    assert.match(none.headers.get('www-authenticate') ?? '', /Bearer/);
    const wrong = await api(
      hub.url,
      'POST',
      '/api/thopters',
      { repository: origin, title: 't' },
      'wrong-token-wrong-token',
    );
    assert.equal(wrong.status, 401);
    assert.match(wrong.body.error.message, /token is wrong/);
    const board = await fetch(`${hub.url}/admin/queues`);
    assert.equal(board.status, 401, 'Bull Board is behind the same auth');
    // No other spelling of a path is another way in.
    for (const sneaky of [
      '/API/thopters',
      '/Api/Thopters',
      '/api/thopters/',
      '/ready/',
      '/READY',
      '/admin/QUEUES',
      '/nowhere',
    ]) {
      assert.equal((await fetch(`${hub.url}${sneaky}`)).status, 401, sneaky);
    }
    const sneakyLaunch = await fetch(`${hub.url}/API/thopters`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ repository: origin, title: 't' }),
    });
    assert.equal(sneakyLaunch.status, 401);
    await unchanged();
  });

  it('answers 404 for an unknown thopter and 400 for a malformed id', async () => {
    assert.equal((await api(hub.url, 'GET', '/api/thopters/thopter-000000000000')).status, 404);
    assert.equal((await api(hub.url, 'DELETE', '/api/thopters/..%2F..%2Fetc')).status, 400);
    await unchanged();
  });
});

describe('the API', () => {
  it('serves /health without a token and /ready with one', async () => {
    assert.equal((await fetch(`${hub.url}/health`)).status, 200);
    assert.equal((await fetch(`${hub.url}/ready`)).status, 401);
    const ready = await api(hub.url, 'GET', '/ready');
    assert.equal(ready.status, 200);
    assert.equal(ready.body.ready, true);
  });

  it('serves Bull Board with the token as a Basic password, showing the hub queues', async () => {
    const auth = `Basic ${Buffer.from(`admin:${hub.apiToken}`).toString('base64')}`;
    const page = await fetch(`${hub.url}/admin/queues`, { headers: { authorization: auth } });
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<html/i);
    const queues = await fetch(`${hub.url}/admin/queues/api/queues`, { headers: { authorization: auth } });
    const names = ((await queues.json()) as any).queues.map((q: any) => q.name).sort();
    assert.deepEqual(names, ['destroy', 'github', 'phases', 'scan', 'tell', 'thopters']);
  });

  it('makes a launch with the same Idempotency-Key a no-op', async () => {
    const send = () =>
      fetch(`${hub.url}/api/thopters`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${hub.apiToken}`,
          'content-type': 'application/json',
          'idempotency-key': 'run-1',
        },
        body: JSON.stringify({ repository: origin, title: 'once' }),
      }).then(async (r) => ({ status: r.status, body: (await r.json()) as any }));
    const first = await send();
    const second = await send();
    assert.equal(first.status, 202);
    assert.equal(second.status, 200);
    assert.equal(second.body.id, first.body.id);
    const ids = (await hub.store.list()).filter((t) => t.request.issue.title === 'once').map((t) => t.id);
    assert.deepEqual(ids, [first.body.id]);
    await api(hub.url, 'DELETE', `/api/thopters/${first.body.id}`);
    await waitFor('destroyed', async () => (await hub.store.state(first.body.id)) === 'destroyed');
  });

  it('refuses an Idempotency-Key reused for another request, and changes nothing', async () => {
    const send = (body: object) =>
      fetch(`${hub.url}/api/thopters`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${hub.apiToken}`,
          'content-type': 'application/json',
          'idempotency-key': 'run-2',
        },
        body: JSON.stringify(body),
      }).then(async (r) => ({ status: r.status, body: (await r.json()) as any }));
    const first = await send({ repository: origin, title: 'keyed', body: 'do this' });
    assert.equal(first.status, 202);
    const records = async () => (await hub.store.list()).map((t) => [t.id, t.request.issue.body]);
    const known = await records();
    const other = await send({ repository: origin, title: 'keyed', body: 'do that instead' });
    assert.equal(other.status, 422, JSON.stringify(other.body));
    assert.match(other.body.error.message, /Idempotency-Key: was already used for another request/);
    assert.deepEqual(await records(), known, 'no thopter made or changed');
    // The same request again, its keys in another order, is still the first thopter.
    const again = await send({ body: 'do this', title: 'keyed', repository: origin });
    assert.equal(again.status, 200);
    assert.equal(again.body.id, first.body.id);
    await api(hub.url, 'DELETE', `/api/thopters/${first.body.id}`);
    await waitFor('destroyed', async () => (await hub.store.state(first.body.id)) === 'destroyed');
  });

  it('gives the place in line of a queued launch', async () => {
    const running = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title: 'first' });
    await waitFor('the first to run', async () => (await hub.store.state(running.body.id)) === 'running');
    const second = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title: 'second' });
    const third = await api(hub.url, 'POST', '/api/thopters', {
      repository: origin,
      title: 'third',
      priority: 5,
    });
    assert.equal(second.body.queuePosition, 1);
    assert.equal(third.body.queuePosition, 1, 'a better priority goes ahead');
    const again = await api(hub.url, 'GET', `/api/thopters/${second.body.id}`);
    assert.equal(again.body.queuePosition, 2);
    for (const r of [running, second, third]) await api(hub.url, 'DELETE', `/api/thopters/${r.body.id}`);
    for (const r of [running, second, third]) {
      await waitFor('destroyed', async () => (await hub.store.state(r.body.id)) === 'destroyed');
    }
  });
});

describe('observer status posts', () => {
  it("are accepted only with the thopter's own token, and every field is checked", async () => {
    const a = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title: 'a' });
    await waitFor('a to run', async () => (await hub.store.state(a.body.id)) === 'running');
    const b = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title: 'b' }); // queued behind a
    const record = await hub.store.get(a.body.id);
    const tokenFile = `${world.dir}/data/thopters/${record!.machine!.id}/home/.thopter/status-token`;
    const token = (await import('node:fs')).readFileSync(tokenFile, 'utf8');
    const post = (id: string, body: unknown, t: string) =>
      api(hub.url, 'POST', `/api/thopters/${id}/status`, body, t);
    const now = new Date().toISOString();
    const good = {
      thopterId: a.body.id,
      tmuxState: 'idle',
      claudeProcess: 'running',
      screenDump: 'hello',
      lastActivity: now,
      spawnedAt: now,
      idleSince: now,
    };
    const sessionBefore = (await hub.store.get(b.body.id))!.session;
    assert.equal(
      (await post(b.body.id, { ...good, thopterId: b.body.id }, token)).status,
      401,
      "another thopter's token",
    );
    assert.equal(
      (await post(a.body.id, good, hub.apiToken)).status,
      401,
      "the hub's token is not a thopter's",
    );
    const bad = await post(a.body.id, { ...good, tmuxState: 'sleepy' }, token);
    assert.equal(bad.status, 400);
    assert.match(bad.body.error.message, /tmuxState/);
    assert.equal((await post(a.body.id, { ...good, thopterId: b.body.id }, token)).status, 400);
    assert.deepEqual((await hub.store.get(b.body.id))!.session, sessionBefore);
    assert.equal((await post(a.body.id, good, token)).status, 204);
    for (const r of [a, b]) await api(hub.url, 'DELETE', `/api/thopters/${r.body.id}`);
    for (const r of [a, b])
      await waitFor('destroyed', async () => (await hub.store.state(r.body.id)) === 'destroyed');
  });
});
