import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { startFakeGitHub, type FakeGitHub } from './fakes/github.js';
import { TestWorld } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

const world = new TestWorld();
const REPO = 'acme/sturdy';
const TOKEN = 'ghp_sturdy_issues_token';
let gh: FakeGitHub;
let origin: string;

before(async () => {
  await world.start();
  origin = world.origin('sturdy');
  gh = await startFakeGitHub();
  gh.addToken(TOKEN, 'thopter-hub');
  gh.addRepo(REPO, { cloneUrl: origin });
  gh.setPermission(REPO, 'thopter-hub', 'write');
  gh.setPermission(REPO, 'alice', 'admin');
});
after(async () => {
  await gh?.close();
  await world.close();
});

const env = (extra: Record<string, string> = {}) => ({
  GITHUB_API_URL: gh.url,
  GITHUB_INTEGRATION_JSON: JSON.stringify({ repositories: { [REPO]: { issuesPAT: TOKEN } } }),
  GITHUB_ISSUES_POLLING_INTERVAL: '1',
  ...extra,
});
const acks = (n: number) => gh.comments(REPO, n).filter((c) => c.body?.includes('<!-- thopter-ack:'));

it('two hubs polling while a fifth of GitHub answers fail: one ack, one thopter, and kill works', async () => {
  const hubA = await world.hub(env());
  const hubB = await world.hub(env());
  const flaky = gh.fail((req) => req.path.startsWith('/repos/') && Math.random() < 0.2, {
    status: 502,
    times: Infinity,
  });
  const issue = gh.addIssue(REPO, { title: 'Sturdy', body: 'context', user: 'bob' });
  gh.addComment(REPO, issue.number, { user: 'alice', body: '/thopter' });

  const ack = await waitFor('the acknowledgement', () => acks(issue.number)[0], { timeoutMs: 120_000 });
  await waitFor(
    'running, on the comment',
    () => /\*\*running\*\*/.test(gh.comments(REPO, issue.number).find((c) => c.id === ack.id)?.body ?? ''),
    { timeoutMs: 120_000 },
  );
  gh.addComment(REPO, issue.number, { user: 'alice', body: '/thopter kill' });
  await waitFor(
    'destroyed, on the comment',
    () => /\*\*destroyed\*\*/.test(gh.comments(REPO, issue.number).find((c) => c.id === ack.id)?.body ?? ''),
    { timeoutMs: 120_000 },
  );

  assert.ok(flaky.hits > 0, 'faults were injected');
  assert.equal(acks(issue.number).length, 1, 'exactly one acknowledgement');
  const thopters = (await hubA.store.list()).filter((t) => t.request.issue.number === issue.number);
  assert.equal(thopters.length, 1, 'exactly one thopter');
  flaky.cancel();
  await world.stopHub(hubA);
  await world.stopHub(hubB);
});

it('a hub killed between detection and acknowledgement: after a restart, still one ack and one thopter', async () => {
  const crashy = env({ HUB_LOCK_DURATION: '3s', HUB_STALLED_INTERVAL: '1s', LOG_LEVEL: 'warn' });
  // The acknowledgement's POST hangs, so the kill lands while it is in flight.
  gh.delay(`POST /repos/${REPO}/issues/*/comments`, 2000, 1);
  const first = await world.spawnHub(crashy);
  const issue = gh.addIssue(REPO, { title: 'Crashy', body: 'context', user: 'bob' });
  gh.addComment(REPO, issue.number, { user: 'alice', body: '/thopter' });
  await waitFor('the acknowledgement in flight', () =>
    gh.requests.some(
      (r) => r.method === 'POST' && r.canonicalPath === `/repos/${REPO}/issues/${issue.number}/comments`,
    ),
  );
  first.child.kill('SIGKILL');
  await new Promise((r) => first.child.once('exit', r));

  const second = await world.spawnHub(crashy);
  await waitFor(
    'the thopter running, on its comment',
    () => acks(issue.number).some((c) => /\*\*running\*\*/.test(c.body ?? '')),
    { timeoutMs: 90_000 },
  );
  const keys = await world.client.keys('tw:record:*');
  const records = await Promise.all(
    keys.filter((k) => !k.endsWith(':events')).map((k) => world.client.hget(k, 'request')),
  );
  const mine = records.filter((r) => r && JSON.parse(r).issue.number === issue.number);
  assert.equal(mine.length, 1, 'exactly one thopter');
  assert.equal(acks(issue.number).length, 1, 'exactly one acknowledgement');
  second.child.kill('SIGTERM');
  await new Promise((r) => second.child.once('exit', r));
});
