import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import type { Hub } from '../src/hub.js';
import { bash, FakeAnthropic, userTexts, type MessageRequest, type Step } from './fakes/anthropic.js';
import type { FakeGitHub } from './fakes/github.js';
import { api, TestWorld, TOKEN } from './helpers/env.js';
import { startIssueAgentWorld } from './helpers/issue-agent.js';
import { clearOfUtcMidnight, waitFor } from './helpers/wait.js';

const world = new TestWorld();
const REPO = 'acme/widget';
const OTHER = 'acme/gadget';
let gh: FakeGitHub;
let model: FakeAnthropic;
let hub: Hub;
let origin: string;

/**
 * Prices that make the cost known to the cent: $1000 per million output tokens ($0.001 each),
 * nothing for the rest, so a step's `output_tokens` is its cost in tenths of a cent.
 */
const PRICES = { 'claude-opus-5-5': { input: 0, output: 1000, cacheRead: 0, cacheCreation: 0 } };
const costs = (outputTokens: number) => ({ output_tokens: outputTokens });
const WRAP_UP = /Budget: this run has spent \$0\.9\d+ of its \$1\.00 limit\. Commit your work/;
const sawWrapUp = (req: MessageRequest) => userTexts(req).some((t) => WRAP_UP.test(t));

/** After the first two steps: wrap up once told to (and past the cap), else a short answer. */
const answer = (req: MessageRequest): Step =>
  sawWrapUp(req)
    ? { text: 'Wrapping up: NOTES.md has my notes.', usage: costs(100) }
    : { text: 'Working on it.', usage: costs(10) };

const reports = (issue: number) =>
  gh.comments(REPO, issue).filter((c) => /^<!-- thopter-report:/.test(c.body ?? ''));
const replies = (repo: string, issue: number) =>
  gh.comments(repo, issue).filter((c) => /^<!-- thopter-reply:/.test(c.body ?? ''));

before(async () => {
  // the spend of the first test is read back as today's by the next two.
  await clearOfUtcMidnight(10 * 60_000);
  await world.start();
  ({ gh, model, hub, origin } = await startIssueAgentWorld(world, {
    repositories: { [REPO]: { dailyBudgetUsd: 1 }, [OTHER]: {} },
    coder: true,
    writers: ['alice', 'bob'],
    script: [
      { tools: [bash('cat prompt.md', 'Read the instructions')], usage: costs(500) },
      // Work left uncommitted: only the save can keep it.
      { tools: [bash('cd widget && echo "draft notes" > NOTES.md', 'Write notes')], usage: costs(420) },
      answer,
      answer,
      answer,
      answer,
    ],
    env: {
      THOPTER_PRICES: JSON.stringify(PRICES),
      THOPTER_MAX_COST_USD: '1',
      THOPTER_DAILY_BUDGET_USD_PER_PERSON: '1',
    },
  }));
});
after(async () => {
  await model?.close();
  await gh?.close();
  await world.close();
});

describe('budgets: a run capped by THOPTER_MAX_COST_USD, launches held to daily budgets', () => {
  it('tells the agent to wrap up at 90 %, then saves its work and ends it at 100 %, reason budget', async () => {
    const issue = gh.addIssue(REPO, { title: 'Write notes', body: 'Please.', user: 'alice' }).number;
    gh.addComment(REPO, issue, { user: 'alice', body: '/thopter --gc default' });
    const end = await waitFor(
      'the report of the end',
      () => reports(issue).find((c) => /:end -->/.test(c.body ?? '')),
      { timeoutMs: 240_000 },
    );
    // The scripted model read the hub's wrap-up message, once, and answered it.
    const told = model.requests.filter((r) => r.step !== undefined && sawWrapUp(r.body));
    assert.ok(told.length >= 1, 'the model saw the wrap-up message');
    const id = /thopter-report:(thopter-[a-f0-9]+):end -->/.exec(end.body ?? '')![1]!;
    const view = (await api(hub.url, 'GET', `/api/thopters/${id}`)).body;
    assert.equal(view.state, 'destroyed');
    assert.match(view.endReason, /^budget: spent \$1\.0\d of its \$1\.00 \(THOPTER_MAX_COST_USD\)$/);
    assert.equal(view.events.filter((e: { type: string }) => e.type === 'told').length, 1);
    assert.ok(view.events.some((e: { type: string; message: string }) => e.type === 'budget'));
    // The end report says why, and that the uncommitted notes were saved on the work branch.
    assert.match(end.body ?? '', /\*\*ended\*\*: budget: spent \$1\.0\d of its \$1\.00/);
    assert.match(end.body ?? '', /Work saved: committed [0-9a-f]{12} \(1 file: NOTES\.md\) and pushed/);
    const notes = execFileSync('git', ['-C', origin, 'show', `${view.workBranch}:NOTES.md`], {
      encoding: 'utf8',
    });
    assert.equal(notes, 'draft notes\n');
  });

  it('refuses a launch on a repository past its daily budget, saying until when', async () => {
    const issue = gh.addIssue(REPO, { title: 'More notes', body: 'Please.', user: 'bob' }).number;
    gh.addComment(REPO, issue, { user: 'bob', body: '/thopter --gc default' });
    const [reply] = await waitFor('the budget reply', () => {
      const r = replies(REPO, issue);
      return r.length ? r : undefined;
    });
    const tomorrow = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
    assert.match(
      reply!.body ?? '',
      new RegExp(
        `@bob: acme/widget has spent \\$1\\.0\\d today of a daily budget of \\$1\\.00, so no new thopter starts until ${tomorrow}T00:00:00\\.000Z \\(the next UTC midnight\\)`,
      ),
    );
    assert.match(reply!.body ?? '', /dailyBudgetUsd in GITHUB_INTEGRATION_JSON/);
    // The same over the API: 429 with Retry-After, and no thopter.
    const before = (await api(hub.url, 'GET', '/api/thopters')).body.thopters.length;
    const res = await fetch(`${hub.url}/api/thopters`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ repository: REPO, title: 'Notes', body: 'Please.' }),
    });
    assert.equal(res.status, 429);
    const retryAfter = Number(res.headers.get('retry-after'));
    assert.ok(retryAfter > 0 && retryAfter <= 86_400, `Retry-After: ${retryAfter}`);
    const refusal = (await res.json()) as { error: { code: string; until: string; message: string } };
    assert.equal(refusal.error.code, 'over-budget');
    assert.equal(refusal.error.until, `${tomorrow}T00:00:00.000Z`);
    assert.equal((await api(hub.url, 'GET', '/api/thopters')).body.thopters.length, before);
  });

  it('refuses a person past their daily budget, on a repository with none', async () => {
    // alice asked for the run that spent $1.0x, on another repository.
    const issue = gh.addIssue(OTHER, { title: 'Gadget', body: 'Please.', user: 'alice' }).number;
    gh.addComment(OTHER, issue, { user: 'alice', body: '/thopter --gc default' });
    const [reply] = await waitFor('the budget reply', () => {
      const r = replies(OTHER, issue);
      return r.length ? r : undefined;
    });
    assert.match(
      reply!.body ?? '',
      /@alice: @alice has spent \$1\.0\d today of a daily budget of \$1\.00, so no new thopter starts until \S+T00:00:00\.000Z \(the next UTC midnight\): ask again then, or have an operator raise THOPTER_DAILY_BUDGET_USD_PER_PERSON\.$/m,
    );
    assert.ok(!gh.comments(OTHER, issue).some((c) => /^<!-- thopter-ack:/.test(c.body ?? '')));
  });
});
