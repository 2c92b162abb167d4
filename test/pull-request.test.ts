import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Hub } from '../src/hub.js';
import { startFakeGitHub, type FakeGitHub } from './fakes/github.js';
import { AGENT, api, TestWorld, TOKEN, writeFixture } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

/**
 * The work branch's pull request, end to end: real git (the agent commits and pushes to a bare
 * origin, which the fake GitHub reads for compare and pull requests), real Redis, the local
 * provider.
 */
const world = new TestWorld();
const WIDGET = 'acme/widget';
const READY = 'acme/ready';
const QUIET = 'acme/quiet';
const ISSUES_PAT = 'ghp_issues_token_for_the_hub_0001';
const CODER_PAT = 'ghp_coder_token_for_the_agent_0002';
const PUBLIC = 'https://hub.example.test';
let gh: FakeGitHub;
let widgetOrigin: string;
let readyOrigin: string;
let quietOrigin: string;
/** Two hubs sharing one Redis and THOPTER_PULL_REQUEST's default (draft). */
let hub: Hub;
let second: Hub;
/**
 * A hub of its own (own prefix and data folder) with THOPTER_PULL_REQUEST=off. It watches other
 * repositories than the two above: hubs apart must not poll the same issues.
 */
let offHub: Hub;

before(async () => {
  await world.start();
  widgetOrigin = world.origin('widget');
  readyOrigin = world.origin('ready');
  quietOrigin = world.origin('quiet');
  gh = await startFakeGitHub();
  gh.addToken(ISSUES_PAT, 'thopter-hub');
  gh.addToken(CODER_PAT, 'thopter-coder');
  gh.addRepo(WIDGET, { cloneUrl: widgetOrigin });
  gh.addRepo(READY, { cloneUrl: readyOrigin });
  gh.addRepo(QUIET, { cloneUrl: quietOrigin });
  for (const repo of [WIDGET, READY, QUIET]) {
    gh.setPermission(repo, 'thopter-hub', 'write');
    gh.setPermission(repo, 'thopter-coder', 'write');
    gh.setPermission(repo, 'alice', 'write');
  }
  // The agent of an issue titled "NO PUSH" works without pushing anything; one titled "EXITS"
  // pushes, works a little longer (past launch-agent's settle time), then exits.
  const agent = writeFixture(
    world.dir,
    'agent-or-idle.sh',
    `#!/usr/bin/env bash\nset -euo pipefail\nif grep -q 'NO PUSH' issue.md; then exec sleep 100000; fi\nif grep -q 'EXITS' issue.md; then AGENT_STAY=0 bash ${AGENT}; sleep 8; exit 0; fi\nexec bash ${AGENT}\n`,
    0o755,
  );
  const env = {
    GITHUB_API_URL: gh.url,
    GITHUB_INTEGRATION_JSON: JSON.stringify({
      repositories: { [WIDGET]: { issuesPAT: ISSUES_PAT, agentCoderPAT: CODER_PAT } },
    }),
    GITHUB_ISSUES_POLLING_INTERVAL: '1',
    HUB_PUBLIC_URL: PUBLIC,
    THOPTER_AGENT_COMMAND: `bash ${agent}`,
  };
  hub = await world.hub(env);
  second = await world.hub(env);
  offHub = await world.hub({
    ...env,
    HUB_REDIS_PREFIX: 'off',
    DATA_DIR: path.join(world.dir, 'data-off'),
    THOPTER_PULL_REQUEST: 'off',
    GITHUB_INTEGRATION_JSON: JSON.stringify({
      repositories: {
        [READY]: { issuesPAT: ISSUES_PAT, agentCoderPAT: CODER_PAT, pullRequest: 'ready', closeIssue: false },
        [QUIET]: { issuesPAT: ISSUES_PAT, agentCoderPAT: CODER_PAT },
      },
    }),
  });
});
after(async () => {
  await gh?.close();
  await world.close();
});

/** Launches a thopter for a new issue through the API and waits for its work branch on origin (or not). */
async function launch(on: Hub, repo: string, title: string, pushes = true) {
  const issue = gh.addIssue(repo, { title, body: 'Please do it.', user: 'alice' });
  const res = await api(on.url, 'POST', '/api/thopters', { repository: repo, issueNumber: issue.number });
  assert.equal(res.status, 202, JSON.stringify(res.body));
  const id = res.body.id as string;
  await waitFor('the thopter running', async () => (await on.store.state(id)) === 'running');
  const branch = (await on.store.get(id))!.machine!.workBranch;
  if (pushes) {
    const origin = { [WIDGET]: widgetOrigin, [READY]: readyOrigin, [QUIET]: quietOrigin }[repo]!;
    await waitFor('the work branch on origin', () => world.branches(origin).includes(branch));
  }
  return { id, branch, number: issue.number };
}

async function kill(on: Hub, id: string) {
  const res = await api(on.url, 'DELETE', `/api/thopters/${id}`);
  assert.equal(res.status, 202);
  await waitFor('the thopter destroyed', async () => (await on.store.state(id)) === 'destroyed');
}

const pullsFrom = (repo: string, branch: string) =>
  gh.pullRequests(repo).filter((p) => p.head.ref === branch);
/** The thopter's pull-request jobs have all run (whatever they decided). */
const jobsDone = (on: Hub, id: string) =>
  waitFor('the pull-request jobs to finish', async () => {
    const jobs = (await on.queues.queues.github.getJobs()).filter(
      (j) => j.name === 'pull-request' && j.data.thopterId === id,
    );
    const states = await Promise.all(jobs.map((j) => j.getState()));
    return jobs.length > 0 && states.every((s) => s === 'completed') ? states : undefined;
  });

describe('the work branch gets a pull request', () => {
  it('opens one draft pull request into the default branch once the thopter ends, and shows it', async () => {
    const issue = gh.addIssue(WIDGET, { title: 'Add a greeting', body: 'We need one.', user: 'bob' });
    gh.addComment(WIDGET, issue.number, { user: 'alice', body: '/thopter' });
    const id = await waitFor(
      'the thopter',
      async () =>
        (await hub.store.list()).find(
          (t) => t.request.issue.number === issue.number && t.request.repository === WIDGET,
        )?.id,
    );
    await waitFor('the thopter running', async () => (await hub.store.state(id)) === 'running');
    const branch = (await hub.store.get(id))!.machine!.workBranch;
    await waitFor('the work branch on origin', () => world.branches(widgetOrigin).includes(branch));

    await kill(hub, id);
    const [pr] = await waitFor('a pull request', () =>
      pullsFrom(WIDGET, branch).length ? pullsFrom(WIDGET, branch) : undefined,
    );
    assert.equal(pr!.title, 'Add a greeting');
    assert.equal(pr!.draft, true);
    assert.equal(pr!.base.ref, 'main');
    assert.equal(pr!.user?.login, 'thopter-coder', 'opened with the agentCoderPAT');
    assert.match(pr!.body ?? '', new RegExp(`^Closes #${issue.number}$`, 'm'));
    assert.ok(pr!.body?.includes(`${PUBLIC}/thopters/${id}`), 'links the thopter on the dashboard');

    const view = await waitFor('the pull request on the record', async () => {
      const r = await api(hub.url, 'GET', `/api/thopters/${id}`);
      return r.body.pullRequest ? r.body : undefined;
    });
    assert.deepEqual(view.pullRequest, { number: pr!.number, url: pr!.html_url, draft: true, base: 'main' });
    assert.equal(view.compare.aheadBy, 1);
    assert.equal(view.compare.filesChanged, 1);
    assert.equal(view.compare.additions, 1);
    assert.equal(view.compare.deletions, 0);
    const page = await fetch(`${hub.url}/thopters/${id}`, { headers: { authorization: `Bearer ${TOKEN}` } });
    const html = await page.text();
    assert.ok(
      html.includes(`<a href="${pr!.html_url}">#${pr!.number}</a> (draft)`),
      'the dashboard links it',
    );
    assert.match(html, /1 commit ahead of main, 1 file changed, \+1 −0/);

    // Asking again (another turn end, a retry) finds it: still one.
    await hub.queues.enqueue('pull-request', { thopterId: id, label: 'again' });
    await jobsDone(hub, id);
    assert.equal(gh.pullRequests(WIDGET).filter((p) => p.head.ref === branch).length, 1);
  });

  it('opens it when the agent process exits, while the thopter still lives', async () => {
    const t = await launch(hub, WIDGET, 'EXITS when done');
    const record = await waitFor(
      'the pull request on the record',
      async () => (await hub.store.get(t.id))?.pullRequest,
    );
    assert.notEqual(await hub.store.state(t.id), 'destroyed', 'opened before any teardown');
    assert.equal(pullsFrom(WIDGET, t.branch).length, 1);
    assert.equal(pullsFrom(WIDGET, t.branch)[0]!.number, record.number);
    await kill(hub, t.id);
    await jobsDone(hub, t.id);
    assert.equal(pullsFrom(WIDGET, t.branch).length, 1, 'the teardown adopts it, makes no second');
  });

  it('opens one for an API launch given as title and body, naming no issue', async () => {
    const res = await api(hub.url, 'POST', '/api/thopters', {
      repository: WIDGET,
      title: 'A task without an issue',
      body: 'Do the thing.',
    });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    const id = res.body.id as string;
    await waitFor('the thopter running', async () => (await hub.store.state(id)) === 'running');
    const branch = (await hub.store.get(id))!.machine!.workBranch;
    await waitFor('the work branch on origin', () => world.branches(widgetOrigin).includes(branch));
    await kill(hub, id);
    const [pr] = await waitFor('a pull request', () =>
      pullsFrom(WIDGET, branch).length ? pullsFrom(WIDGET, branch) : undefined,
    );
    assert.equal(pr!.title, 'A task without an issue');
    assert.doesNotMatch(pr!.body ?? '', /Closes|Refs/);
    assert.ok(pr!.body?.includes(`${PUBLIC}/thopters/${id}`));
  });

  it('opens a ready pull request that only refers to the issue when the repository says so, even with THOPTER_PULL_REQUEST=off', async () => {
    const t = await launch(offHub, READY, 'Ready work');
    await kill(offHub, t.id);
    const [pr] = await waitFor('a pull request', () =>
      pullsFrom(READY, t.branch).length ? pullsFrom(READY, t.branch) : undefined,
    );
    assert.equal(pr!.draft, false);
    assert.match(pr!.body ?? '', new RegExp(`^Refs #${t.number}$`, 'm'));
    assert.doesNotMatch(pr!.body ?? '', /Closes/);
  });

  it('opens none with THOPTER_PULL_REQUEST=off, and still counts the commits', async () => {
    const t = await launch(offHub, QUIET, 'Quiet work');
    await kill(offHub, t.id);
    await jobsDone(offHub, t.id);
    const record = (await offHub.store.get(t.id))!;
    assert.equal(record.compare?.aheadBy, 1, 'the branch was compared');
    assert.equal(record.pullRequest, undefined);
    assert.deepEqual(pullsFrom(QUIET, t.branch), []);
  });

  it('opens none, and fails nothing, when the agent pushed nothing', async () => {
    const t = await launch(hub, WIDGET, 'NO PUSH please', false);
    await kill(hub, t.id);
    await jobsDone(hub, t.id);
    assert.deepEqual(pullsFrom(WIDGET, t.branch), []);
    const record = (await hub.store.get(t.id))!;
    assert.equal(record.pullRequest, undefined);
    assert.equal(record.compare, undefined);
  });

  it('opens none when the branch has nothing the default branch lacks', async () => {
    const t = await launch(hub, WIDGET, 'NO PUSH either', false);
    // The branch is on origin, but at main's commit.
    execFileSync('git', ['-C', widgetOrigin, 'branch', t.branch, 'main']);
    await kill(hub, t.id);
    await jobsDone(hub, t.id);
    assert.equal((await hub.store.get(t.id))!.compare?.aheadBy, 0);
    assert.deepEqual(pullsFrom(WIDGET, t.branch), []);
  });
});

describe('exactly one pull request per work branch', () => {
  it('adopts the pull request whose creation answer was lost (502 after GitHub made it)', async () => {
    const t = await launch(hub, WIDGET, 'Lost answer');
    const lost = gh.fail(`POST /repos/${WIDGET}/pulls`, { status: 502, afterServing: true });
    await kill(hub, t.id);
    const record = await waitFor(
      'the pull request on the record',
      async () => (await hub.store.get(t.id))?.pullRequest,
    );
    assert.equal(lost.hits, 1, 'the creation answer was lost once');
    const prs = pullsFrom(WIDGET, t.branch);
    assert.equal(prs.length, 1);
    assert.equal(record.number, prs[0]!.number);
  });

  it('adopts the pull request whose connection dropped after GitHub made it', async () => {
    const t = await launch(hub, WIDGET, 'Dropped connection');
    const lost = gh.fail(`POST /repos/${WIDGET}/pulls`, { resetConnection: true, afterServing: true });
    await kill(hub, t.id);
    const record = await waitFor(
      'the pull request on the record',
      async () => (await hub.store.get(t.id))?.pullRequest,
    );
    assert.equal(lost.hits, 1);
    const prs = pullsFrom(WIDGET, t.branch);
    assert.equal(prs.length, 1);
    assert.equal(record.number, prs[0]!.number);
  });

  it('makes one when two hubs open it at the same time', async () => {
    const t = await launch(hub, WIDGET, 'Two hubs');
    // Several jobs for the same thopter at once, on both hubs (beyond the queue's deduplication,
    // as two hubs that each saw the turn end would): GitHub's refusal of a second is what holds.
    await Promise.all(
      [hub, second, hub, second].map((h, i) =>
        h.queues.enqueue(
          'pull-request',
          { thopterId: t.id, label: 'race' },
          { deduplication: { id: `race-${i}` } },
        ),
      ),
    );
    await jobsDone(hub, t.id);
    const prs = pullsFrom(WIDGET, t.branch);
    assert.equal(prs.length, 1);
    assert.equal((await hub.store.get(t.id))!.pullRequest?.number, prs[0]!.number);
    await kill(second, t.id);
    await jobsDone(hub, t.id);
    assert.equal(pullsFrom(WIDGET, t.branch).length, 1);
  });
});
