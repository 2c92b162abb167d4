import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { deliverWebhook, startFakeGitHub, type FakeGitHub } from './fakes/github.js';
import { TestWorld } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

// Redis lost for good (no AOF to restart from) while GitHub keeps every comment: the commands
// inside the look-back are seen again, by the next poll or a webhook, with nothing in Redis.
const world = new TestWorld();
const REPO = 'acme/widget';
const TOKEN = 'ghp_issues_token_for_the_hub';
const SECRET = 'webhook-secret-for-tests';
let gh: FakeGitHub;

before(async () => {
  await world.start();
  gh = await startFakeGitHub();
  gh.addToken(TOKEN, 'thopter-hub');
  gh.addRepo(REPO, { cloneUrl: world.origin('widget') });
  gh.setPermission(REPO, 'thopter-hub', 'write');
  gh.setPermission(REPO, 'alice', 'write');
  gh.setPermission(REPO, 'mallory', 'read');
});
after(async () => {
  await gh?.close();
  await world.close();
});

const env = {
  GITHUB_API_URL: 'set in the test',
  GITHUB_INTEGRATION_JSON: JSON.stringify({ repositories: { [REPO]: { issuesPAT: TOKEN } } }),
  GITHUB_ISSUES_POLLING_INTERVAL: '1',
  GITHUB_WEBHOOK_SECRET: SECRET,
  THOPTER_AGENT_COMMAND: 'sleep 600',
};
const acks = (n: number) => gh.comments(REPO, n).filter((c) => c.body?.includes('<!-- thopter-ack:'));
const ack = (n: number) => acks(n)[0]?.body ?? '';
const lostReplies = (n: number) =>
  gh
    .comments(REPO, n)
    .filter((c) => c.body?.includes('<!-- thopter-reply:') && /lost its record/.test(c.body));

it('a command acknowledged before Redis was lost launches nothing again, by poll or webhook, and says its thopter is lost', async () => {
  const hubEnv = { ...env, GITHUB_API_URL: gh.url };
  const first = await world.hub(hubEnv);
  const command = (title: string) => {
    const issue = gh.addIssue(REPO, { title, body: 'x', user: 'bob' });
    return {
      number: issue.number,
      comment: gh.addComment(REPO, issue.number, { user: 'alice', body: '/thopter' }),
    };
  };
  const byWebhook = command('seen again by webhook');
  const byPoll = command('seen again by poll');
  const ended = command('ended before');
  const refused = gh.addIssue(REPO, { title: 'refused before', body: '/thopter', user: 'mallory' });
  for (const n of [byWebhook.number, byPoll.number]) {
    await waitFor(`#${n} running`, () => /\*\*running\*\*/.test(ack(n)), { timeoutMs: 60_000 });
  }
  gh.addComment(REPO, ended.number, { user: 'alice', body: '/thopter kill' });
  await waitFor('the killed one to say destroyed', () => /\*\*destroyed\*\*/.test(ack(ended.number)));
  await waitFor('the reply to the kill', () =>
    gh.comments(REPO, ended.number).some((c) => /destroying `thopter-/.test(c.body ?? '')),
  );
  await waitFor('the report of its end', () =>
    gh
      .comments(REPO, ended.number)
      .some((c) => /^<!-- thopter-report:thopter-[a-f0-9]+:end -->/.test(c.body ?? '')),
  );
  await waitFor('the refusal', () => gh.comments(REPO, refused.number).length === 1);
  const endedComments = gh.comments(REPO, ended.number).length;

  await world.stopHub(first);
  await world.client.flushall();
  // The next hub's polls see no issue until the webhook had its turn, so each path is tried alone.
  const blind = gh.fail(`GET /repos/${REPO}/issues`, { status: 404, times: Infinity });
  const hub = await world.hub(hubEnv);

  const delivered = await deliverWebhook(`${hub.url}/github/webhook`, {
    ...gh.issueCommentEvent(REPO, byWebhook.comment.id, 'created'),
    secret: SECRET,
  });
  assert.equal(delivered.status, 202);
  // The webhook acts before it answers: a launch would be on record now.
  assert.deepEqual(await hub.store.list(), [], 'the webhook launched nothing');
  await waitFor('the webhook path to say the thopter is lost', () => lostReplies(byWebhook.number)[0]);

  blind.cancel();
  await waitFor('the poll to say the other thopter is lost', () => lostReplies(byPoll.number)[0]);
  const polls = gh.requests.filter((r) => r.canonicalPath === `/repos/${REPO}/issues`).length;
  await waitFor(
    'three more polls',
    () => gh.requests.filter((r) => r.canonicalPath === `/repos/${REPO}/issues`).length >= polls + 3,
  );

  assert.deepEqual(await hub.store.list(), [], 'no second thopter');
  for (const c of [byWebhook, byPoll, ended])
    assert.equal(acks(c.number).length, 1, 'no second acknowledgement');
  assert.equal(lostReplies(byWebhook.number).length, 1);
  assert.equal(lostReplies(byPoll.number).length, 1);
  assert.match(
    lostReplies(byPoll.number)[0]!.body ?? '',
    /@alice: .*thopter `thopter-[a-f0-9]{12}`.*new comment/,
  );
  assert.equal(gh.comments(REPO, ended.number).length, endedComments, 'an ended thopter is not news');
  assert.equal(gh.comments(REPO, refused.number).length, 1, 'a refusal is not repeated');
  // Reconciliation destroyed the machines the hub no longer knows (the reply says so).
  await waitFor('no machine left', async () => (await hub.provider.list()).length === 0);
});
