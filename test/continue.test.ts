import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Hub } from '../src/hub.js';
import { thopterIdFor } from '../src/scanner/intake.js';
import type { ThopterRecord } from '../src/thopters/record.js';
import { bash, FakeAnthropic, userTexts, type MessageRequest } from './fakes/anthropic.js';
import type { FakeGitHub } from './fakes/github.js';
import { api, TestWorld, TOKEN, writeFixture } from './helpers/env.js';
import { startIssueAgentWorld } from './helpers/issue-agent.js';
import { waitFor } from './helpers/wait.js';

const world = new TestWorld();
const REPO = 'acme/widget';
let gh: FakeGitHub;
let model: FakeAnthropic;
let hub: Hub;
let origin: string;

const branchIn = (req: MessageRequest) => /thopter\/\d+--[a-f0-9]+/.exec(userTexts(req).join('\n'))?.[0];
const git = (args: string[]) =>
  execFileSync('git', ['-C', origin, ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  }).trim();
const hubComments = (issue: number, marker: RegExp) =>
  gh.comments(REPO, issue).filter((c) => marker.test(c.body ?? ''));
const record = async (id: string, pred: (t: ThopterRecord) => boolean, what: string) =>
  waitFor(
    what,
    async () => {
      const t = await hub.store.get(id);
      return t && pred(t) ? t : undefined;
    },
    { timeoutMs: 180_000 },
  );
/** The id the hub gives the thopter of a command in a comment: repository + issue + instance. */
const idOf = (issue: number, commentId: number) =>
  thopterIdFor(`github:${REPO}#${issue}@comment:${commentId}`);

before(async () => {
  await world.start();
  ({ gh, model, hub, origin } = await startIssueAgentWorld(world, {
    repositories: { [REPO]: {} },
    coder: true,
    readers: ['rita'],
    script: [
      // The first thopter: commits a greeting and pushes it.
      { tools: [bash('cat prompt.md', 'Read the instructions')] },
      (req) => {
        const branch = branchIn(req);
        if (!branch) return { text: 'prompt.md names no work branch.' };
        return {
          tools: [
            bash(
              `cd widget && echo hello > GREETING.md && git add GREETING.md && git commit -qm 'Add a greeting' && git push -q origin ${branch}`,
              'Commit and push',
            ),
          ],
        };
      },
      { text: 'I added GREETING.md and pushed it.' },
      // The continuing thopter: reads its prompt, then adds to the earlier commit's file.
      { tools: [bash('cat prompt.md', 'Read the instructions')] },
      (req) => {
        const branch = branchIn(req);
        if (!branch) return { text: 'prompt.md names no work branch.' };
        return {
          tools: [
            bash(
              `cd widget && grep -q hello GREETING.md && echo 'and X' >> GREETING.md && git commit -qam 'Also fix X' && git push -q origin ${branch}`,
              'Carry on, commit and push',
            ),
          ],
        };
      },
      { text: 'I fixed X on top of the greeting.' },
      // What a continue says to that thopter while its agent waits reaches it as a tell.
      { text: 'Noted: the one more thing is done too.' },
    ],
  }));
});
after(async () => {
  await model?.close();
  await gh?.close();
  await world.close();
});

describe('/thopter continue', () => {
  let issue: number;
  let first: ThopterRecord;
  let branch: string;
  let prNumber: number;
  let second: ThopterRecord;
  let continueComment: number;

  it('starts from an ended thopter: its work pushed, its pull request open', async () => {
    issue = gh.addIssue(REPO, { title: 'Add a greeting', body: 'Please.', user: 'alice' }).number;
    const launch = gh.addComment(REPO, issue, { user: 'alice', body: '/thopter --gc default' });
    const id = idOf(issue, launch.id);
    first = await record(id, (t) => !!t.pullRequest, 'the first thopter’s pull request');
    branch = first.machine!.workBranch;
    prNumber = first.pullRequest!.number;
    assert.equal(git(['log', '--format=%s', branch]).split('\n')[0], 'Add a greeting');

    gh.addComment(REPO, issue, { user: 'alice', body: 'Nice. X is still broken in the footer, though.' });
    gh.addComment(REPO, issue, { user: 'alice', body: '/thopter kill' });
    first = await record(id, (t) => t.state === 'destroyed', 'the first thopter ended');
    await waitFor('the end report', () => hubComments(issue, /^<!-- thopter-report:.*:end -->/).length > 0);
  });

  it('starts a new thopter on the same branch, with the earlier commit, the new comments marked and the text', async () => {
    continueComment = gh.addComment(REPO, issue, {
      user: 'alice',
      body: '/thopter continue please also fix X\nIt is in the footer.',
    }).id;
    const id = idOf(issue, continueComment);
    second = await record(id, (t) => t.state === 'running', 'the continuing thopter running');
    assert.equal(second.machine!.workBranch, branch);
    assert.deepEqual(second.request.continues, {
      thopterId: first.id,
      workBranch: branch,
      since: first.startedAt,
      text: 'please also fix X\nIt is in the footer.',
    });

    // The acknowledgement says what it continues.
    const ack = await waitFor('the acknowledgement', () =>
      hubComments(issue, new RegExp(`^<!-- thopter-ack:comment:${continueComment} -->`)).find((c) =>
        /Work branch/.test(c.body ?? ''),
      ),
    );
    assert.match(ack.body ?? '', new RegExp(`Continues \`${first.id}\` on its branch \`${branch}\``));

    const workspace = path.join(world.dir, 'data', 'thopters', second.machine!.id, 'home', 'workspace');
    const issueMd = readFileSync(path.join(workspace, 'issue.md'), 'utf8');
    const at = (s: string) => {
      const i = issueMd.indexOf(s);
      assert.ok(i >= 0, `issue.md has ${JSON.stringify(s)}:\n${issueMd}`);
      return i;
    };
    const newMark = at('## New since the last run');
    // Before the mark: what the first thopter had seen. After it: its report and what people said since.
    assert.ok(at('/thopter --gc default') < newMark);
    assert.ok(at('I added GREETING.md and pushed it.') > newMark);
    assert.ok(at('X is still broken in the footer') > newMark);
    assert.ok(at('/thopter continue please also fix X') > newMark);
    assert.ok(at('## What is asked now\n\nplease also fix X\nIt is in the footer.') > newMark);
    // The hub's bookkeeping (acknowledgements, replies) is not conversation.
    assert.doesNotMatch(issueMd, /thopter-ack:|thopter-reply:/);

    // The dashboard links the thopter it continues.
    const page = await fetch(`${hub.url}/thopters/${second.id}`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assert.match(
      await page.text(),
      new RegExp(
        `<dt>Continues</dt>\\s*<dd>\\s*<a href="/thopters/${first.id}">${first.id}</a> on its branch\\s*</dd>`,
      ),
    );

    const prompt = readFileSync(path.join(workspace, 'prompt.md'), 'utf8');
    assert.match(
      prompt,
      new RegExp(`An earlier thopter, \`${first.id}\`, worked on this issue on the branch \`${branch}\``),
    );
    assert.match(prompt, /^> please also fix X\n> It is in the footer\.$/m);
  });

  it('pushes on top of the earlier commit into the same pull request', async () => {
    const report = await waitFor(
      'the continuing thopter’s first report',
      () => hubComments(issue, new RegExp(`^<!-- thopter-report:${second.id}:turn-1 -->`))[0],
      { timeoutMs: 180_000 },
    );
    assert.deepEqual(git(['log', '--format=%s', branch]).split('\n').slice(0, 2), [
      'Also fix X',
      'Add a greeting',
    ]);
    assert.equal(git(['show', `${branch}:GREETING.md`]), 'hello\nand X');
    const prs = gh.pullRequests(REPO);
    assert.equal(prs.length, 1, 'one pull request for the branch');
    assert.equal(prs[0]!.number, prNumber);
    assert.equal(prs[0]!.head.sha, git(['rev-parse', branch]));
    const adopted = await record(second.id, (t) => !!t.pullRequest, 'the pull request adopted');
    assert.equal(adopted.pullRequest!.number, prNumber);
    assert.match(report.body ?? '', new RegExp(`Pull request: \\[#${prNumber}\\]`));
    assert.match(report.body ?? '', /2 commits ahead of `main`/);
  });

  it('acts on a continue detected again only once', async () => {
    const polls = () => gh.requests.filter((r) => r.canonicalPath === `/repos/${REPO}/issues`).length;
    const seen = polls();
    await waitFor('three polls more', () => polls() >= seen + 3);
    const mine = (await hub.store.list()).filter((t) => t.request.issue.number === issue);
    assert.deepEqual(mine.map((t) => t.id).sort(), [first.id, second.id].sort());
    assert.equal(
      hubComments(issue, new RegExp(`^<!-- thopter-ack:comment:${continueComment} -->`)).length,
      1,
    );
  });

  it('tells the text to a live thopter whose agent waits, instead of starting another', async () => {
    // Claude Code draws notices in its footer for some 20 s after a turn ends: the screen moves,
    // and the agent still waits.
    const ended = Date.parse((await hub.store.get(second.id))!.turns!.lastEndedAt!);
    await waitFor('the agent to have waited 25 s', () => Date.now() >= ended + 25_000);
    const c = gh.addComment(REPO, issue, { user: 'alice', body: '/thopter continue one more thing\nplease' });
    const reply = await waitFor('the reply', () =>
      hubComments(issue, /^<!-- thopter-reply:/).find((r) => /went to it as a/.test(r.body ?? '')),
    );
    assert.match(reply.body ?? '', new RegExp(`@alice: thopter \`${second.id}\` is still on this issue`));
    await waitFor('the agent to read the text as one message', () =>
      model.requests.some((r) => userTexts(r.body).some((t) => t.includes('one more thing\nplease'))),
    );
    await waitFor('the report that answers it', () =>
      hubComments(issue, new RegExp(`^<!-- thopter-report:${second.id}:turn-2 -->`)).find((r) =>
        /the one more thing is done too/.test(r.body ?? ''),
      ),
    );
    assert.equal(await hub.store.get(idOf(issue, c.id)), null);
  });

  it('answers a continue with no text while a thopter is live with how to tell it', async () => {
    const before = new Set(hubComments(issue, /^<!-- thopter-reply:/).map((r) => r.id));
    const c = gh.addComment(REPO, issue, { user: 'alice', body: '/thopter continue' });
    const reply = await waitFor('the reply', () =>
      hubComments(issue, /^<!-- thopter-reply:/).find((r) => !before.has(r.id)),
    );
    assert.match(reply.body ?? '', new RegExp(`@alice: thopter \`${second.id}\` is still working`));
    assert.match(reply.body ?? '', /\/thopter tell TEXT/);
    assert.equal(await hub.store.get(idOf(issue, c.id)), null);
  });

  it('answers a continue on an issue where no thopter ran with how to start one', async () => {
    const fresh = gh.addIssue(REPO, { title: 'Nothing yet', body: 'Hm.', user: 'alice' }).number;
    const c = gh.addComment(REPO, fresh, { user: 'alice', body: '/thopter continue' });
    const reply = await waitFor('the reply', () => hubComments(fresh, /^<!-- thopter-reply:/)[0]);
    assert.match(
      reply.body ?? '',
      /@alice: there is nothing to continue: no thopter has run on this issue, or none since THOPTER_RETENTION \(the hub forgets thopters that ended longer ago\)\. Write `\/thopter` to start a new thopter\./,
    );
    assert.equal(await hub.store.get(idOf(fresh, c.id)), null);
  });

  it('refuses the continue prompt for a launch, which has nothing to carry on', async () => {
    const fresh = gh.addIssue(REPO, { title: 'Pick a prompt', body: 'Hm.', user: 'alice' }).number;
    const c = gh.addComment(REPO, fresh, { user: 'alice', body: '/thopter --prompt continue' });
    const reply = await waitFor('the reply', () => hubComments(fresh, /^<!-- thopter-reply:/)[0]);
    assert.match(
      reply.body ?? '',
      /@alice: "continue" carries on an ended thopter's work: write `\/thopter continue` on the issue, or give the API `continues`; the prompts are: default\./,
    );
    assert.equal(await hub.store.get(idOf(fresh, c.id)), null);
  });

  it('refuses a read-only user’s continue', async () => {
    const c = gh.addComment(REPO, issue, { user: 'rita', body: '/thopter continue do it my way' });
    const reply = await waitFor('the refusal', () =>
      hubComments(issue, /^<!-- thopter-reply:/).find((r) => /@rita/.test(r.body ?? '')),
    );
    assert.match(reply.body ?? '', /only people with write access to acme\/widget can run thopters here/);
    assert.equal(await hub.store.get(idOf(issue, c.id)), null);
  });

  it('fails at clone, saying so, when origin no longer has the branch', async () => {
    gh.addComment(REPO, issue, { user: 'alice', body: '/thopter kill' });
    await record(second.id, (t) => t.state === 'destroyed', 'the continuing thopter ended');
    git(['branch', '-D', branch]);
    const c = gh.addComment(REPO, issue, { user: 'alice', body: '/thopter continue' });
    const third = await record(idOf(issue, c.id), (t) => t.state === 'failed', 'the third thopter failed');
    // The newest ended thopter is the continuing one: the same branch again.
    assert.equal(third.request.continues?.thopterId, second.id);
    assert.match(
      third.endReason ?? '',
      new RegExp(
        `the work branch ${branch} of ${second.id} is not on origin \\(it was never pushed, or was deleted or renamed since\\)`,
      ),
    );
    assert.equal(third.phases['clone-repo']?.outcome, 'failed');
    await waitFor('the status comment to show the failure', () =>
      hubComments(issue, new RegExp(`^<!-- thopter-ack:comment:${c.id} -->`)).some((a) =>
        /\*\*failed\*\*: .*is not on origin \(it was never pushed/.test(a.body ?? ''),
      ),
    );
  });
});

describe('POST /api/thopters with continues', () => {
  let apiHub: Hub;
  let gadget: string;
  let first: string;
  let branch: string;
  const gadgetGit = (args: string[]) =>
    execFileSync('git', ['-C', gadget, ...args], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    }).trim();
  const get = async (id: string) => (await api(apiHub.url, 'GET', `/api/thopters/${id}`)).body;
  const until = (id: string, pred: (t: any) => boolean, what: string) =>
    waitFor(what, async () => {
      const t = await get(id);
      return pred(t) ? t : undefined;
    });
  const count = async () => (await api(apiHub.url, 'GET', '/api/thopters')).body.thopters.length;

  before(async () => {
    // The real agent adds nothing here: a script commits one line on top of what the clone has.
    const agent = writeFixture(
      path.join(world.dir, 'fixtures'),
      'agent-adds-a-line.sh',
      `#!/usr/bin/env bash
set -euo pipefail
branch=$(grep -o 'thopter/[A-Za-z0-9]*--[a-z0-9]*' ./prompt.md | head -n 1)
cd gadget
echo "a line on $(git rev-parse --short HEAD)" >> WORK.md
git add WORK.md
git commit -qm "work on top of $(git rev-list --count HEAD) commits"
git push -q origin "$branch"
exec sleep 100000
`,
      0o755,
    );
    if (hub) await world.stopHub(hub);
    gadget = world.origin('gadget');
    apiHub = await world.hub({ THOPTER_AGENT_COMMAND: `bash ${agent}` });
  });

  it('refuses a continues that names no ended thopter of that repository, changing nothing', async () => {
    first = (await api(apiHub.url, 'POST', '/api/thopters', { repository: gadget, title: 'Start it' })).body
      .id;
    const running = await until(first, (t) => t.state === 'running', 'the first thopter running');
    branch = running.workBranch;
    await waitFor('its push', () => world.branches(gadget).includes(branch));
    const before = await count();
    const tries: Array<[unknown, number, RegExp]> = [
      ['thopter-000000000000', 404, /continues: there is no thopter thopter-000000000000/],
      [first, 409, new RegExp(`continues: thopter ${first} is still running: .*DELETE it first`)],
      ['not an id', 400, /continues: must be a thopter id/],
    ];
    for (const [continues, status, message] of tries) {
      const res = await api(apiHub.url, 'POST', '/api/thopters', {
        repository: gadget,
        title: 'More',
        continues,
      });
      assert.equal(res.status, status, JSON.stringify(res.body));
      assert.match(res.body.error.message, message);
    }
    assert.equal((await api(apiHub.url, 'DELETE', `/api/thopters/${first}`)).status, 202);
    await until(first, (t) => t.state === 'destroyed', 'the first thopter destroyed');
    const elsewhere = await api(apiHub.url, 'POST', '/api/thopters', {
      repository: world.origin('elsewhere'),
      title: 'More',
      continues: first,
    });
    assert.equal(elsewhere.status, 422);
    assert.match(
      elsewhere.body.error.message,
      /continues: thopter .* worked on .*gadget\.git, not .*elsewhere\.git/,
    );
    assert.equal(await count(), before);
  });

  it('starts a thopter on the ended one’s branch, on top of its commit', async () => {
    const launch = { repository: gadget, title: 'Carry on', continues: first };
    const post = async () => {
      const r = await fetch(`${apiHub.url}/api/thopters`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${TOKEN}`,
          'content-type': 'application/json',
          'idempotency-key': 'carry-on-1',
        },
        body: JSON.stringify(launch),
      });
      return { status: r.status, body: (await r.json()) as any };
    };
    const res = await post();
    assert.equal(res.status, 202, JSON.stringify(res.body));
    // The same request again (its answer lost): the same thopter, not a conflict with itself.
    const retried = await post();
    assert.equal(retried.status, 200, JSON.stringify(retried.body));
    assert.equal(retried.body.id, res.body.id);
    const next = await until(res.body.id, (t) => t.state === 'running', 'the continuing thopter running');
    assert.equal(next.workBranch, branch);
    assert.equal(next.continues.thopterId, first);
    assert.equal(next.prompt, 'continue');
    await waitFor('its push on top of the first', () =>
      gadgetGit(['log', '--format=%s', branch]).startsWith('work on top of 2 commits\n'),
    );
    assert.deepEqual(gadgetGit(['log', '--format=%s', branch]).split('\n'), [
      'work on top of 2 commits',
      'work on top of 1 commits',
      'initial',
    ]);
    // One agent per branch: the ended thopter is carried on already.
    const again = await api(apiHub.url, 'POST', '/api/thopters', {
      repository: gadget,
      title: 'Carry on twice',
      continues: first,
    });
    assert.equal(again.status, 409);
    assert.match(
      again.body.error.message,
      new RegExp(`continues: thopter ${next.id} carries on ${branch} already.*end it first`),
    );
  });

  it('starts one thopter on a branch when several continues of it arrive at once', async () => {
    const live = (await api(apiHub.url, 'GET', '/api/thopters')).body.thopters.filter(
      (t: any) => t.workBranch === branch && !['destroyed', 'failed'].includes(t.state),
    );
    for (const t of live)
      assert.equal((await api(apiHub.url, 'DELETE', `/api/thopters/${t.id}`)).status, 202);
    for (const t of live) await until(t.id, (x) => x.state === 'destroyed', 'the continuation ended');
    const tries = await Promise.all(
      Array.from({ length: 5 }, () =>
        api(apiHub.url, 'POST', '/api/thopters', { repository: gadget, title: 'At once', continues: first }),
      ),
    );
    const statuses = tries.map((r) => r.status).sort();
    assert.deepEqual(statuses, [202, 409, 409, 409, 409], JSON.stringify(tries.map((r) => r.body)));
    for (const r of tries.filter((r) => r.status === 409))
      assert.match(r.body.error.message, /^continues: thopter thopter-[a-f0-9]+ carries on \S+ already/);
    const started = tries.find((r) => r.status === 202)!.body.id;
    const onBranch = (await api(apiHub.url, 'GET', '/api/thopters')).body.thopters.filter(
      (t: any) => (t.workBranch === branch || t.continues?.workBranch === branch) && t.state !== 'destroyed',
    );
    assert.deepEqual(
      onBranch.map((t: any) => t.id),
      [started],
    );
    assert.equal((await api(apiHub.url, 'DELETE', `/api/thopters/${started}`)).status, 202);
    await until(started, (x) => x.state === 'destroyed', 'the continuation ended');
  });
});
