import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Hub } from '../src/hub.js';
import { deliverWebhook, secondaryRateLimit, startFakeGitHub, type FakeGitHub } from './fakes/github.js';
import { api, TestWorld } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

const world = new TestWorld();
const REPO = 'acme/widget';
const TOKEN = 'ghp_issues_token_for_the_hub';
const SECRET = 'webhook-secret-for-tests';
let gh: FakeGitHub;
let hub: Hub;
let origin: string;

const ackMarkers = (number: number) =>
  gh.comments(REPO, number).filter((c) => c.body?.includes('<!-- thopter-ack:'));
const replies = (number: number) =>
  gh.comments(REPO, number).filter((c) => c.body?.includes('<!-- thopter-reply:'));
/** The reasons of the destroy jobs queued for a thopter. */
const destroysOf = async (thopterId: string) =>
  (await hub.queues.queues.destroy.getJobs())
    .filter((j) => j.data.thopterId === thopterId)
    .map((j) => j.data.reason as string);
const listRequests = () => gh.requests.filter((r) => r.canonicalPath === `/repos/${REPO}/issues`).length;
const thoptersOf = async (number: number) =>
  (await hub.store.list()).filter((t) => t.request.repository === REPO && t.request.issue.number === number);

before(async () => {
  await world.start();
  origin = world.origin('widget');
  gh = await startFakeGitHub();
  gh.addToken(TOKEN, 'thopter-hub');
  gh.addRepo(REPO, { cloneUrl: origin });
  gh.addToken('ghp_expired', 'someone');
  gh.addRepo('acme/other');
  gh.setPermission(REPO, 'thopter-hub', 'write'); // GitHub shows permissions only to users with push access
  gh.setPermission(REPO, 'alice', 'write');
  gh.setPermission(REPO, 'mallory', 'read');
  hub = await world.hub({
    GITHUB_API_URL: gh.url,
    GITHUB_INTEGRATION_JSON: JSON.stringify({
      repositories: {
        [REPO]: { issuesPAT: TOKEN, userName: 'Widget Bot', userEmail: 'bot@widget.test' },
        'acme/other': { issuesPAT: 'ghp_wrong' },
      },
    }),
    GITHUB_ISSUES_POLLING_INTERVAL: '1',
    GITHUB_WEBHOOK_SECRET: SECRET,
    HUB_PUBLIC_URL: 'https://hub.example.test',
  });
});
after(async () => {
  await gh?.close();
  await world.close();
});

describe('GitHub intake by polling', () => {
  it("acknowledges a collaborator's /thopter, tracks the thopter to running, and /thopter kill stops it", async () => {
    const issue = gh.addIssue(REPO, { title: 'Add a greeting', body: 'We need a greeting.', user: 'bob' });
    gh.addComment(REPO, issue.number, { user: 'carol', body: 'Yes please, make it friendly.' });
    gh.addComment(REPO, issue.number, { user: 'alice', body: 'Let a thopter try.\n/thopter' });

    const ack = await waitFor('the acknowledgement', () => ackMarkers(issue.number)[0]);
    assert.match(ack.body ?? '', /\*\*Thopter\*\* `thopter-[a-f0-9]{12}` for @alice/);
    const [thopter] = await thoptersOf(issue.number);
    assert.ok(thopter, 'a thopter was accepted');
    assert.equal(thopter.request.requestedBy, 'alice');
    assert.equal(thopter.request.cloneUrl, origin, "cloned from the repository's clone_url");

    await waitFor('the comment to say running', () =>
      /\*\*running\*\*/.test(gh.comments(REPO, issue.number).find((c) => c.id === ack.id)?.body ?? ''),
    );
    const runningBody = gh.comments(REPO, issue.number).find((c) => c.id === ack.id)!.body ?? '';
    const page = `https://hub.example.test/thopters/${thopter.id}`;
    for (const link of [
      `[dashboard](${page})`,
      `[terminal](${page}/terminal)`,
      `[session log](${page}/log)`,
    ]) {
      assert.ok(runningBody.includes(link), `the running comment links ${link}`);
    }
    const running = (await hub.store.get(thopter.id))!;
    await waitFor('the work branch on origin', () =>
      world.branches(origin).includes(running.machine!.workBranch),
    );
    const issueMd = readFileSync(
      path.join(world.dir, 'data', 'thopters', running.machine!.id, 'home', 'workspace', 'issue.md'),
      'utf8',
    );
    assert.match(issueMd, /Add a greeting[\s\S]*We need a greeting[\s\S]*carol[\s\S]*make it friendly/);
    assert.equal(running.request.issue.mentionAuthor, 'alice');
    assert.equal(running.request.issue.author, 'bob');

    gh.addComment(REPO, issue.number, { user: 'alice', body: '/thopter kill' });
    await waitFor('the thopter destroyed', async () => (await hub.store.state(thopter.id)) === 'destroyed');
    await waitFor('the comment to say destroyed', () =>
      /\*\*destroyed\*\*/.test(gh.comments(REPO, issue.number).find((c) => c.id === ack.id)?.body ?? ''),
    );
    await waitFor('a reply to the kill', () =>
      replies(issue.number).some((c) => /destroying `thopter-/.test(c.body ?? '')),
    );
    assert.equal(ackMarkers(issue.number).length, 1, 'exactly one acknowledgement');
    assert.equal((await thoptersOf(issue.number)).length, 1, 'exactly one thopter');
  });

  it('gives anyone without write access one polite reply, and no thopter', async () => {
    const issue = gh.addIssue(REPO, { title: 'Mine', body: '/thopter', user: 'mallory' });
    await waitFor('a reply', () => replies(issue.number)[0]);
    const scansBefore = gh.requests.filter((r) => r.canonicalPath === `/repos/${REPO}/issues`).length;
    await waitFor(
      'two more polls',
      () => gh.requests.filter((r) => r.canonicalPath === `/repos/${REPO}/issues`).length >= scansBefore + 2,
    );
    assert.equal(replies(issue.number).length, 1, 'one reply, however often it is seen');
    assert.match(replies(issue.number)[0]!.body ?? '', /@mallory.*only people with write access/);
    assert.deepEqual(await thoptersOf(issue.number), []);
  });

  it('answers a malformed command with the valid values, and provisions nothing', async () => {
    const issue = gh.addIssue(REPO, { title: 'Typo', body: 'body', user: 'bob' });
    gh.addComment(REPO, issue.number, { user: 'alice', body: '/thopter --colour red' });
    const reply = await waitFor('a reply', () => replies(issue.number)[0]);
    assert.match(reply.body ?? '', /unknown option --colour[\s\S]*Prompts: default/);
    gh.addComment(REPO, issue.number, { user: 'alice', body: '/thopter --prompt nosuch' });
    await waitFor('a second reply', () => replies(issue.number).length === 2);
    assert.match(replies(issue.number)[1]!.body ?? '', /no prompt "nosuch"; the prompts are: default/);
    assert.deepEqual(await thoptersOf(issue.number), []);
  });

  it('ignores commands in quotes, code and pull requests, and from bots', async () => {
    const issue = gh.addIssue(REPO, { title: 'Docs', body: '> /thopter\n```\n/thopter\n```', user: 'alice' });
    gh.addComment(REPO, issue.number, { user: 'helper[bot]', body: '/thopter' });
    const pr = gh.addIssue(REPO, { title: 'PR', body: '/thopter', user: 'alice', pullRequest: true });
    const marker = gh.addIssue(REPO, { title: 'after', body: 'x', user: 'bob' });
    gh.addComment(REPO, marker.number, { user: 'mallory', body: '/thopter' });
    await waitFor('the later command to be answered', () => replies(marker.number)[0]);
    assert.deepEqual(
      gh.comments(REPO, issue.number).filter((c) => c.user?.login === 'thopter-hub'),
      [],
    );
    assert.deepEqual(gh.comments(REPO, pr.number), []);
    assert.deepEqual(await thoptersOf(issue.number), []);
  });

  it('takes only its own comments for its markers: a copied acknowledgement neither blocks a launch nor gets edited', async () => {
    const issue = gh.addIssue(REPO, { title: 'Copied marker', body: '/thopter', user: 'alice' });
    const copied = '<!-- thopter-ack:body -->\nAlready handled, nothing to see.';
    gh.addComment(REPO, issue.number, { user: 'mallory', body: copied });
    const ack = await waitFor("the hub's own acknowledgement", () =>
      ackMarkers(issue.number).find((c) => c.user?.login === 'thopter-hub'),
    );
    assert.match(ack.body ?? '', /for @alice/);
    assert.equal(gh.comments(REPO, issue.number).find((c) => c.user?.login === 'mallory')?.body, copied);
    const [thopter] = await thoptersOf(issue.number);
    assert.ok(thopter, 'a thopter was accepted');
    await api(hub.url, 'DELETE', `/api/thopters/${thopter.id}`);
    await waitFor('destroyed', async () => (await hub.store.state(thopter.id)) === 'destroyed');
  });

  it('finds a command on any page: more than 100 changed issues hide nothing', async () => {
    const many = Array.from({ length: 130 }, (_, i) =>
      gh.addIssue(REPO, { title: `bulk ${i}`, body: 'nothing', user: 'bob' }),
    );
    gh.addComment(REPO, many[5]!.number, { user: 'mallory', body: '/thopter' });
    await waitFor('the command on an early page', () => replies(many[5]!.number)[0], { timeoutMs: 60_000 });
  });

  it('waits out 5xx answers and secondary rate limits instead of failing', async () => {
    const outage = gh.fail(`GET /repos/${REPO}/issues`, { status: 502, times: 2 });
    const limited = gh.fail(`GET /repos/${REPO}/issues`, secondaryRateLimit({ retryAfter: 1 }));
    const issue = gh.addIssue(REPO, { title: 'Flaky day', body: '/thopter', user: 'mallory' });
    await waitFor('the reply despite the faults', () => replies(issue.number)[0]);
    assert.equal(outage.hits, 2, 'two 502 answers were waited out');
    assert.equal(limited.hits, 1, 'a secondary rate limit was waited out');
  });

  it('costs no rate limit to poll once nothing changes', async () => {
    const settled = () => gh.requests.filter((r) => r.canonicalPath === `/repos/${REPO}/issues`);
    // Earlier tests' replies changed issues: the polls that see those changes (one request per page,
    // and the first request for the `since` that moved) are charged. Settled means the last four
    // requests were answered 304.
    await waitFor('the polls to settle', () => {
      const s = settled();
      return s.length >= 4 && s.slice(-4).every((r) => r.status === 304);
    });
    const used = gh.rateLimit(TOKEN).used;
    const before = gh.requests.length;
    const polls = settled().length;
    await waitFor('two more polls', () => settled().length >= polls + 2);
    const charged = gh.requests.slice(before).filter((r) => r.cost);
    assert.equal(
      gh.rateLimit(TOKEN).used,
      used,
      `idle polls were answered 304, for free; charged: ${JSON.stringify(charged.map((r) => [r.method, r.path, r.status]))}`,
    );
    assert.ok(settled().slice(-1)[0]!.status === 304);
  });

  it('reports a repository whose token fails, and keeps the others working', async () => {
    const ready = await waitFor('/ready to report acme/other', async () => {
      const r = await api(hub.url, 'GET', '/ready');
      return r.body.github?.['acme/other'] ? r : undefined;
    });
    assert.equal(ready.status, 200);
    assert.deepEqual(ready.body.degraded, ['acme/other']);
    assert.match(ready.body.github['acme/other'].error, /invalid or expired.*GITHUB_INTEGRATION_JSON/);
    assert.equal(ready.body.github[REPO].ok, true);
  });

  it('refuses launches while intake is paused, and says so on the issue', async () => {
    assert.equal((await api(hub.url, 'POST', '/api/intake/pause')).body.paused, true);
    const issue = gh.addIssue(REPO, { title: 'While paused', body: '/thopter', user: 'alice' });
    const reply = await waitFor('a reply', () => replies(issue.number)[0]);
    assert.match(reply.body ?? '', /paused/);
    const launch = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title: 'x' });
    assert.equal(launch.status, 503);
    assert.match(launch.body.error.message, /paused/);
    assert.deepEqual(await thoptersOf(issue.number), []);
    assert.equal((await api(hub.url, 'POST', '/api/intake/resume')).body.paused, false);
  });

  it("destroys an issue's thopters when polling sees the issue closed, without a webhook", async () => {
    const issue = gh.addIssue(REPO, { title: 'Closed quietly', body: 'x', user: 'bob' });
    const launched = await api(hub.url, 'POST', '/api/thopters', {
      repository: REPO,
      issueNumber: issue.number,
    });
    assert.equal(launched.status, 202);
    gh.closeIssue(REPO, issue.number, { user: 'bob' });
    await waitFor('destroyed', async () =>
      (await hub.store.get(launched.body.id))?.endReason?.startsWith('the issue was closed'),
    );
  });

  it('destroys nothing for an issue reopened while the poll that saw it closed was still running', async () => {
    const issue = gh.addIssue(REPO, { title: 'Reopened mid-poll', body: 'x', user: 'bob' });
    gh.closeIssue(REPO, issue.number, { user: 'bob' });
    // The next poll lists both, then reads the other one's comments: held there, the list it acts
    // on at its end is old.
    const held = gh.delay(`GET /repos/${REPO}/issues/${issue.number + 1}/comments`, 10_000);
    const other = gh.addIssue(REPO, { title: 'Slow to read', body: 'x', user: 'bob' });
    assert.equal(other.number, issue.number + 1);
    await waitFor('a poll to be held', () => held.hits === 1);
    gh.reopenIssue(REPO, issue.number, { user: 'bob' });
    const launched = await api(hub.url, 'POST', '/api/thopters', {
      repository: REPO,
      issueNumber: issue.number,
    });
    assert.equal(launched.status, 202);
    const polls = listRequests();
    await waitFor('the held poll to end', () => listRequests() > polls);
    assert.deepEqual(await destroysOf(launched.body.id), []);
    assert.equal(await hub.store.destroyRequested(launched.body.id), false);
    await api(hub.url, 'DELETE', `/api/thopters/${launched.body.id}`);
    await waitFor('destroyed', async () => (await hub.store.state(launched.body.id)) === 'destroyed');
  });
});

describe('a scripted launch of an issue', () => {
  it("reads the issue's context and clone URL from GitHub", async () => {
    const issue = gh.addIssue(REPO, { title: 'From the API', body: 'Do the thing.', user: 'bob' });
    gh.addComment(REPO, issue.number, { user: 'carol', body: 'Details here.' });
    const res = await api(hub.url, 'POST', '/api/thopters', { repository: REPO, issueNumber: issue.number });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    const record = (await hub.store.get(res.body.id))!;
    assert.equal(record.request.issue.title, 'From the API');
    assert.equal(record.request.issue.comments[0]?.body, 'Details here.');
    assert.equal(record.request.cloneUrl, origin);
    const missing = await api(hub.url, 'POST', '/api/thopters', { repository: REPO, issueNumber: 9999 });
    assert.equal(missing.status, 404);
    assert.match(missing.body.error.message, /no issue #9999/);
    await api(hub.url, 'DELETE', `/api/thopters/${res.body.id}`);
    await waitFor('destroyed', async () => (await hub.store.state(res.body.id)) === 'destroyed');
  });
});

describe('GitHub intake by webhook', () => {
  it('refuses a delivery with a bad signature, and acts on a good one at once', async () => {
    const issue = gh.addIssue(REPO, { title: 'Hooked', body: 'x', user: 'bob' });
    const comment = gh.addComment(REPO, issue.number, { user: 'mallory', body: '/thopter' });
    const event = gh.issueCommentEvent(REPO, comment.id, 'created');
    const bad = await deliverWebhook(`${hub.url}/github/webhook`, { ...event, secret: 'not-the-secret' });
    assert.equal(bad.status, 401);
    const unsigned = await deliverWebhook(`${hub.url}/github/webhook`, { ...event });
    assert.equal(unsigned.status, 401);
    const good = await deliverWebhook(`${hub.url}/github/webhook`, { ...event, secret: SECRET });
    assert.equal(good.status, 202);
    // The webhook handled it before answering: the reply is queued already.
    await waitFor('the reply', () => replies(issue.number)[0], { timeoutMs: 10_000 });
  });

  it("destroys an issue's thopters when the issue is closed", async () => {
    const issue = gh.addIssue(REPO, { title: 'Soon closed', body: 'x', user: 'bob' });
    const launched = await api(hub.url, 'POST', '/api/thopters', {
      repository: REPO,
      issueNumber: issue.number,
    });
    assert.equal(launched.status, 202);
    gh.closeIssue(REPO, issue.number, { user: 'bob' });
    const closed = await deliverWebhook(`${hub.url}/github/webhook`, {
      ...gh.issuesEvent(REPO, issue.number, 'closed'),
      secret: SECRET,
    });
    assert.equal(closed.status, 202);
    await waitFor('destroyed', async () =>
      (await hub.store.get(launched.body.id))?.endReason?.startsWith('the issue was closed'),
    );
  });
});

describe('webhook replays and late deliveries', () => {
  const hookUrl = () => `${hub.url}/github/webhook`;

  /** An issue closed (its `closed` delivery destroyed its thopter), reopened, with a new thopter. */
  async function reopenedWithNewThopter() {
    const issue = gh.addIssue(REPO, { title: 'Closed, then reopened', body: 'x', user: 'bob' });
    const launch = () =>
      api(hub.url, 'POST', '/api/thopters', { repository: REPO, issueNumber: issue.number });
    const first = (await launch()).body.id as string;
    gh.closeIssue(REPO, issue.number, { user: 'bob' });
    const closed = {
      ...gh.issuesEvent(REPO, issue.number, 'closed'),
      secret: SECRET,
      deliveryId: randomUUID(),
    };
    assert.equal((await deliverWebhook(hookUrl(), closed)).status, 202);
    await waitFor('the first thopter destroyed', async () => (await hub.store.state(first)) === 'destroyed');
    gh.reopenIssue(REPO, issue.number, { user: 'bob' });
    const second = await launch();
    assert.equal(second.status, 202);
    return { issue, closed, second: second.body.id as string };
  }

  it('ignores a replayed delivery: answered 200, and nothing happens', async () => {
    const { issue, closed, second } = await reopenedWithNewThopter();
    const requests = gh.requests.length;
    const replay = await deliverWebhook(hookUrl(), closed); // the same bytes and X-GitHub-Delivery
    assert.equal(replay.status, 200);
    assert.match(((await replay.json()) as { ignored: string }).ignored, /received before/);
    assert.deepEqual(
      gh.requests.slice(requests).filter((r) => r.canonicalPath === `/repos/${REPO}/issues/${issue.number}`),
      [],
      'the replay was not even looked into',
    );
    assert.deepEqual(await destroysOf(second), []);
    assert.equal(await hub.store.destroyRequested(second), false);

    const anonymous = await deliverWebhook(hookUrl(), { ...closed, headers: { 'x-github-delivery': '' } });
    assert.equal(anonymous.status, 400);
    assert.match(await anonymous.text(), /X-GitHub-Delivery is missing/);

    await api(hub.url, 'DELETE', `/api/thopters/${second}`);
    await waitFor('destroyed', async () => (await hub.store.state(second)) === 'destroyed');
  });

  it('acts on the issue as it is now: an old closed event for a reopened issue destroys nothing', async () => {
    const { closed, second } = await reopenedWithNewThopter();
    // The same event redelivered under a new id (or one that arrives after the reopening).
    const late = await deliverWebhook(hookUrl(), { ...closed, deliveryId: randomUUID() });
    assert.equal(late.status, 202);
    // The webhook acts before it answers: a destroy would be queued by now.
    assert.deepEqual(await destroysOf(second), []);
    assert.notEqual(await hub.store.state(second), 'destroyed');
    assert.deepEqual(await late.json(), { ignored: 'the issue is open again' });

    await api(hub.url, 'DELETE', `/api/thopters/${second}`);
    await waitFor('destroyed', async () => (await hub.store.state(second)) === 'destroyed');
  });
});

describe('the place in line', () => {
  it('is shown again on the issue as the line moves', async () => {
    // A hub of its own (another Redis prefix), watching a repository nobody else watches.
    const LINE = 'acme/line';
    gh.addRepo(LINE, { cloneUrl: origin });
    gh.setPermission(LINE, 'thopter-hub', 'write');
    gh.setPermission(LINE, 'alice', 'write');
    const lineHub = await world.hub({
      // Its own DATA_DIR too: reconciliation destroys local machines its Redis does not know.
      DATA_DIR: path.join(world.dir, 'line-data'),
      HUB_REDIS_PREFIX: 'line',
      MAX_THOPTERS: '1',
      THOPTER_AGENT_COMMAND: 'sleep 600',
      GITHUB_API_URL: gh.url,
      GITHUB_INTEGRATION_JSON: JSON.stringify({ repositories: { [LINE]: { issuesPAT: TOKEN } } }),
      GITHUB_ISSUES_POLLING_INTERVAL: '1',
      GITHUB_QUEUE_REFRESH_INTERVAL: '1s',
    });
    const ack = (n: number) =>
      gh.comments(LINE, n).find((c) => c.body?.includes('<!-- thopter-ack:'))?.body ?? '';
    const [a, b, c] = ['first', 'second', 'third'].map((title) => {
      const issue = gh.addIssue(LINE, { title, body: 'x', user: 'bob' });
      gh.addComment(LINE, issue.number, { user: 'alice', body: '/thopter' });
      return issue.number;
    }) as [number, number, number];
    await waitFor('the first to run', () => /\*\*running\*\*/.test(ack(a)));
    await waitFor('the third to be second in line', () => /number 2 in line/.test(ack(c)));
    assert.match(ack(b), /number 1 in line/);
    gh.addComment(LINE, a, { user: 'alice', body: '/thopter kill' });
    await waitFor('the third to move up, with no change of its own', () => /number 1 in line/.test(ack(c)));
    gh.addComment(LINE, b, { user: 'alice', body: '/thopter kill' });
    gh.addComment(LINE, c, { user: 'alice', body: '/thopter kill' });
    await waitFor('every thopter of the line to end', async () =>
      (await lineHub.store.list()).every((t) => t.state === 'destroyed'),
    );
    await world.stopHub(lineHub);
  });
});
