import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Hub } from '../src/hub.js';
import { bash, FakeAnthropic, userTexts } from './fakes/anthropic.js';
import { deliverWebhook, type FakeGitHub } from './fakes/github.js';
import { TestWorld, api } from './helpers/env.js';
import { CODER_TOKEN, startIssueAgentWorld } from './helpers/issue-agent.js';
import { waitFor } from './helpers/wait.js';

/**
 * A thopter's pull request is a place to talk to it: commands in comments, reviews and review
 * comments act on that thopter (found by the pull request's head branch), and a review that
 * requests changes reaches its agent. Real Redis, git, tmux and `claude`; GitHub and the Messages
 * API are the fakes.
 */
const world = new TestWorld();
const REPO = 'acme/widget';
const ALICE_TOKEN = 'ghp_alice_token_who_may_write_0001';
const RITA_TOKEN = 'ghp_rita_token_who_may_only_read_02';
const SECRET = 'webhook-secret-for-reviews-3f9a1c';
let gh: FakeGitHub;
let model: FakeAnthropic;
let hub: Hub;
let origin: string;

/** The agent's scripted turns: read the prompt, then commit a twenty-line file and push it. */
const firstTurn = [
  { tools: [bash('cat prompt.md', 'Read the instructions')] },
  (req: Parameters<typeof userTexts>[0]) => {
    const branch = /thopter\/\d+--[a-f0-9]+/.exec(userTexts(req).join('\n'))?.[0];
    if (!branch) return { text: 'prompt.md names no work branch.' };
    return {
      tools: [
        bash(
          `cd widget && seq 1 20 > NUMBERS.md && git add NUMBERS.md && git commit -qm 'Count to twenty' && git push -q origin ${branch}`,
          'Commit and push',
        ),
      ],
    };
  },
  { text: 'I added NUMBERS.md and pushed it.' },
];

before(async () => {
  await world.start();
  ({ gh, model, hub, origin } = await startIssueAgentWorld(world, {
    repositories: { [REPO]: {} },
    coder: true,
    readers: ['rita'],
    script: [],
    env: { GITHUB_WEBHOOK_SECRET: SECRET },
  }));
  // Reviews are written through the API, as these people.
  gh.addToken(ALICE_TOKEN, 'alice');
  gh.addToken(RITA_TOKEN, 'rita');
});
after(async () => {
  await model?.close();
  await gh?.close();
  await world.close();
});

/** A call to the fake GitHub as one of its users. */
async function asUser(token: string, method: string, route: string, body?: unknown) {
  const res = await fetch(`${gh.url}${route}`, {
    method,
    headers: { authorization: `token ${token}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as any };
}

const review = (token: string, number: number, body: Record<string, unknown>) =>
  asUser(token, 'POST', `/repos/${REPO}/pulls/${number}/reviews`, body);

/** The hub's replies on a pull request (or issue), by their text. */
const replies = (number: number) =>
  gh
    .comments(REPO, number)
    .filter((c) => c.user?.login === 'thopter-hub' && /^<!-- thopter-reply:/.test(c.body ?? ''))
    .map((c) => c.body ?? '');

/** A thopter launched for a new issue, running with its work branch pushed. */
async function launch(title: string) {
  const issue = gh.addIssue(REPO, { title, body: 'Please.', user: 'alice' });
  const res = await api(hub.url, 'POST', '/api/thopters', {
    repository: REPO,
    issueNumber: issue.number,
    gc: 'default',
  });
  assert.equal(res.status, 202, JSON.stringify(res.body));
  const id = res.body.id as string;
  const branch = await waitFor(
    'the work branch on origin',
    async () => {
      const b = (await hub.store.get(id))?.machine?.workBranch;
      return b && world.branches(origin).includes(b) ? b : undefined;
    },
    { timeoutMs: 180_000 },
  );
  return { id, branch, issue: issue.number };
}

describe('a review that requests changes reaches the agent', () => {
  it('as one message with the body and each comment’s file and line, once though poll and webhook both see it', async () => {
    model.push(...firstTurn, { text: 'I will change lines 3 and 12.' });
    const t = await launch('Count to twenty');
    // The turn ended: the hub opens the work branch's pull request (and indexes it).
    const pr = await waitFor(
      'the pull request',
      () => gh.pullRequests(REPO).find((p) => p.head.ref === t.branch),
      { timeoutMs: 120_000 },
    );
    const steps = model.stepsTaken;
    const res = await review(ALICE_TOKEN, pr.number, {
      event: 'REQUEST_CHANGES',
      body: 'Close, but not quite.',
      comments: [
        { path: 'NUMBERS.md', line: 3, body: 'Three should be spelled out.' },
        { path: 'NUMBERS.md', line: 12, body: 'Twelve too.' },
      ],
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    // The webhook arrives while polling also reads the pull request, and GitHub redelivers it.
    const event = gh.pullRequestReviewEvent(REPO, pr.number, res.body.id);
    const deliver = () =>
      deliverWebhook(`${hub.url}/github/webhook`, {
        ...event,
        secret: SECRET,
        deliveryId: `review-${pr.number}`,
      });
    const first = await deliver();
    assert.equal(first.status, 202);
    assert.deepEqual(await first.json(), { accepted: 'pull_request_review.submitted' });
    const again = await deliver();
    assert.equal(again.status, 200, 'a redelivery is answered as received before');

    const expected = [
      `@alice reviewed pull request #${pr.number} and requested changes:`,
      '',
      'Close, but not quite.',
      '',
      'On the code:',
      '- `NUMBERS.md` line 3: Three should be spelled out.',
      '- `NUMBERS.md` line 12: Twelve too.',
    ].join('\n');
    await waitFor('the model to answer the review', () => model.stepsTaken > steps, { timeoutMs: 120_000 });
    const seen = userTexts(model.lastTurn()!.body).filter((text) => text.includes('requested changes'));
    assert.equal(seen.length, 1, JSON.stringify(seen));
    // Claude Code wraps a long bracketed paste in <pasted_content>: the message is inside, whole.
    assert.ok(seen[0]!.includes(expected), seen[0]);

    // Told once, said once on the pull request, however many polls and deliveries saw it.
    await waitFor('the reply on the pull request', () => replies(pr.number).length > 0);
    const polls = () =>
      gh.requests.filter((r) => r.canonicalPath === `/repos/${REPO}/pulls/${pr.number}/reviews`).length;
    const before = polls();
    await waitFor('two more polls of the reviews', () => polls() >= before + 2);
    const told = (await hub.store.get(t.id))!.told ?? [];
    assert.equal(told.length, 1);
    assert.equal(told[0]!.from, 'alice');
    assert.equal(told[0]!.state, 'delivered');
    const said = replies(pr.number);
    assert.equal(said.length, 1, JSON.stringify(said));
    assert.ok(said[0]!.includes(`@alice: sent to thopter \`${t.id}\`'s agent.`), said[0]);
    assert.equal(
      userTexts(model.lastTurn()!.body).filter((text) => text.includes('requested changes')).length,
      1,
    );
  });
});

describe('commands on a thopter’s pull request act on that thopter', () => {
  let a: Awaited<ReturnType<typeof launch>> & { pr: number };
  let b: Awaited<ReturnType<typeof launch>> & { pr: number };

  before(async () => {
    const withPullRequest = async (title: string) => {
      model.push(...firstTurn);
      const t = await launch(title);
      const pr = await waitFor(
        'the pull request',
        () => gh.pullRequests(REPO).find((p) => p.head.ref === t.branch),
        { timeoutMs: 120_000 },
      );
      return { ...t, pr: pr.number };
    };
    a = await withPullRequest('First');
    b = await withPullRequest('Second');
  });

  it('`/thopter kill` in a review comment destroys the pull request’s thopter, not another issue’s', async () => {
    // The index is gone (Redis emptied, or a pull request the hub did not open): the head branch
    // still names the thopter.
    await world.client.del(`tw:pull-request:${REPO}#${a.pr}`);
    const res = await review(ALICE_TOKEN, a.pr, {
      event: 'COMMENT',
      body: 'This one is done.',
      comments: [{ path: 'NUMBERS.md', line: 1, body: '/thopter kill' }],
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    await waitFor('the thopter destroyed', async () => (await hub.store.state(a.id)) === 'destroyed', {
      timeoutMs: 120_000,
    });
    await waitFor('the reply on the pull request', () =>
      replies(a.pr).some((r) => r.includes(`@alice: destroying \`${a.id}\`.`)),
    );
    assert.match((await hub.store.get(a.id))!.endReason ?? '', new RegExp(`alice on pull request #${a.pr}`));
    const other = (await hub.store.get(b.id))!;
    assert.equal(other.state, 'running');
    assert.equal(other.destroyRequested, undefined);
  });

  it('`/thopter continue` on the pull request of an ended thopter starts a new one on its work branch', async () => {
    const asked = gh.addComment(REPO, a.pr, { user: 'alice', body: '/thopter continue Carry on from here.' });
    const next = await waitFor(
      'the continuing thopter running, its first turn over',
      async () =>
        (await hub.store.list()).find(
          (t) =>
            t.request.continues?.thopterId === a.id && t.state === 'running' && (t.turns?.count ?? 0) >= 1,
        ),
      { timeoutMs: 180_000 },
    );
    assert.equal(next.machine!.workBranch, a.branch);
    assert.equal(next.request.issue.number, a.issue);
    assert.equal(next.request.continues!.text, 'Carry on from here.');
    // Its status comment is on the thopter's issue, like any continue's.
    await waitFor('the status comment on the issue', () =>
      gh.comments(REPO, a.issue).some((c) => (c.body ?? '').includes(`\`${next.id}\``)),
    );
    assert.equal((await api(hub.url, 'DELETE', `/api/thopters/${next.id}`)).status, 202);
    await waitFor('it destroyed', async () => (await hub.store.state(next.id)) === 'destroyed', {
      timeoutMs: 120_000,
    });

    // Redis restored from a snapshot older than the continue: neither its handled mark nor the
    // thopter it started are there. Its acknowledgement on the issue says it was acted on.
    const mark = `tw:scan:handled:${REPO}#${a.pr}@comment:${asked.id}`;
    assert.equal(await world.client.exists(mark), 1, 'the continue was marked handled');
    await world.client.del(mark, `tw:record:${next.id}`, `tw:record:${next.id}:events`);
    await world.client.zrem('tw:records:index', next.id);
    const prComments = () =>
      gh.requests.filter((r) => r.canonicalPath === `/repos/${REPO}/issues/${a.pr}/comments`).length;
    const seen = prComments();
    await waitFor('three more reads of the pull request’s comments', () => prComments() >= seen + 3);
    assert.equal(await hub.store.get(next.id), null, 'the continue started nothing again');
    assert.equal(await world.client.exists(mark), 1, 'handled again, by its acknowledgement');
  });

  it('`/thopter continue` on the pull request of a closed issue says to reopen it, and starts nothing', async () => {
    gh.closeIssue(REPO, a.issue, { user: 'alice' });
    const before = (await hub.store.list()).length;
    gh.addComment(REPO, a.pr, { user: 'alice', body: '/thopter continue One more thing.' });
    await waitFor('the reply on the pull request', () =>
      replies(a.pr).some((r) =>
        r.includes(`@alice: issue #${a.issue} is closed, and a closed issue starts no thopter. Reopen it`),
      ),
    );
    assert.equal((await hub.store.list()).length, before);
  });

  it('a read-only user’s review is not told and their command is refused, once; a writer’s `tell` on the pull request arrives', async () => {
    const res = await review(RITA_TOKEN, b.pr, {
      event: 'REQUEST_CHANGES',
      body: 'Please redo all of it.',
      comments: [{ path: 'NUMBERS.md', line: 2, body: '/thopter kill' }],
    });
    assert.equal(res.status, 200, JSON.stringify(res.body));
    await waitFor('the refusal on the pull request', () =>
      replies(b.pr).some((r) => r.includes('@rita, thank you for asking, but only people with write access')),
    );
    const polls = () =>
      gh.requests.filter((r) => r.canonicalPath === `/repos/${REPO}/pulls/${b.pr}/reviews`).length;
    const seen = polls();
    await waitFor('two more polls of the reviews', () => polls() >= seen + 2);
    assert.equal(replies(b.pr).length, 1, JSON.stringify(replies(b.pr)));
    const record = (await hub.store.get(b.id))!;
    assert.equal(record.state, 'running');
    assert.deepEqual(record.told ?? [], []);

    model.push({ text: 'Words it is.' });
    const steps = model.stepsTaken;
    const comment = gh.addComment(REPO, b.pr, {
      user: 'alice',
      body: '/thopter tell Use words, not digits.',
    });
    // Its webhook too (an issue_comment on a pull request): told once all the same.
    const delivered = await deliverWebhook(`${hub.url}/github/webhook`, {
      ...gh.issueCommentEvent(REPO, comment.id, 'created'),
      secret: SECRET,
    });
    assert.equal(delivered.status, 202, await delivered.text());
    await waitFor('the model to answer', () => model.stepsTaken > steps, { timeoutMs: 120_000 });
    const texts = userTexts(model.lastTurn()!.body);
    assert.equal(texts.filter((t) => t.includes('Use words, not digits.')).length, 1);
    assert.ok(!texts.some((t) => t.includes('redo all of it')), 'the read-only review was not told');
    assert.equal((await hub.store.get(b.id))!.told?.length, 1);
  });

  it('the fake GitHub refuses reviews as GitHub documents, and changes nothing', async () => {
    const before = (await asUser(ALICE_TOKEN, 'GET', `/repos/${REPO}/pulls/${b.pr}/reviews`)).body.length;
    const refused = async (token: string, body: Record<string, unknown>, error: RegExp) => {
      const res = await review(token, b.pr, body);
      assert.equal(res.status, 422, JSON.stringify(res.body));
      assert.match(JSON.stringify(res.body), error);
    };
    await refused(ALICE_TOKEN, { event: 'REQUEST_CHANGES' }, /Body is required when using REQUEST_CHANGES/);
    await refused(ALICE_TOKEN, { event: 'COMMENT', body: ' ' }, /Body is required when using COMMENT/);
    await refused(ALICE_TOKEN, { event: 'MERGE', body: 'x' }, /is not a member of/);
    // The hub's coder token opened the pull request: it may not approve it or ask itself for changes.
    await refused(CODER_TOKEN, { event: 'APPROVE' }, /Can not approve your own pull request/);
    await refused(
      CODER_TOKEN,
      { event: 'REQUEST_CHANGES', body: 'x' },
      /Can not request changes on your own/,
    );
    await refused(
      ALICE_TOKEN,
      { event: 'COMMENT', body: 'x', comments: [{ path: 'NOPE.md', line: 1, body: 'y' }] },
      /Path could not be resolved/,
    );
    await refused(
      ALICE_TOKEN,
      { event: 'COMMENT', body: 'x', comments: [{ path: 'NUMBERS.md', line: 99, body: 'y' }] },
      /Line could not be resolved/,
    );
    const after = await asUser(ALICE_TOKEN, 'GET', `/repos/${REPO}/pulls/${b.pr}/reviews`);
    assert.equal(after.body.length, before);
    // A review with no event stays PENDING: its author sees it, nobody else does.
    const pending = await review(ALICE_TOKEN, b.pr, { body: 'draft' });
    assert.equal(pending.body.state, 'PENDING');
    assert.equal(pending.body.submitted_at, undefined);
    assert.equal(
      (await asUser(ALICE_TOKEN, 'GET', `/repos/${REPO}/pulls/${b.pr}/reviews`)).body.length,
      before + 1,
    );
    assert.equal(
      (await asUser(RITA_TOKEN, 'GET', `/repos/${REPO}/pulls/${b.pr}/reviews`)).body.length,
      before,
    );
  });

  it('answers review deliveries it cannot use with a clear status and acts on nothing', async () => {
    const url = `${hub.url}/github/webhook`;
    const bad = await deliverWebhook(url, {
      event: 'pull_request_review',
      payload: { action: 'submitted', repository: { full_name: REPO } },
      secret: SECRET,
    });
    assert.equal(bad.status, 400);
    assert.match(await bad.text(), /not a pull_request_review delivery GitHub sends/);
    const forged = await deliverWebhook(url, {
      ...gh.pullRequestReviewEvent(
        REPO,
        b.pr,
        (await review(ALICE_TOKEN, b.pr, { event: 'APPROVE' })).body.id,
      ),
      secret: 'not-the-secret',
    });
    assert.equal(forged.status, 401);
    // A pull request no thopter works on: nothing to do, said so.
    const other = gh.addIssue(REPO, { title: 'Someone else’s', user: 'alice', pullRequest: true });
    const ignored = await deliverWebhook(url, {
      event: 'pull_request_review',
      payload: {
        action: 'submitted',
        review: { id: 1, user: { login: 'alice', id: 5, type: 'User' }, state: 'changes_requested' },
        pull_request: { number: other.number },
        repository: { full_name: REPO },
      },
      secret: SECRET,
    });
    assert.equal(ignored.status, 202);
    assert.deepEqual(await ignored.json(), { ignored: "not a thopter's pull request" });
    assert.equal((await hub.store.get(b.id))!.told?.length, 1, 'only alice’s tell');
  });
});
