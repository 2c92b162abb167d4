import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_AGENT_COMMAND } from '../src/config.js';
import type { Hub } from '../src/hub.js';
import { bash, FakeAnthropic, userTexts, type MessageRequest, type Step } from './fakes/anthropic.js';
import { startFakeGitHub, type FakeGitHub } from './fakes/github.js';
import { CLAUDE_BIN_DIR, claudeEnvFile, makeGoldenClaude, TEST_API_KEY } from './helpers/claude.js';
import { api, TestWorld, TOKEN } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

// The real Claude Code, as the hub's machines find it: on the PATH they inherit.
process.env.PATH = `${CLAUDE_BIN_DIR}:${process.env.PATH ?? '/usr/bin:/bin'}`;

const world = new TestWorld();
const REPO = 'acme/widget';
const OTHER = 'acme/gadget';
const ISSUES_TOKEN = 'ghp_issues_token_for_the_hub';
const CODER_TOKEN = 'ghp_coder_token_for_the_agent';
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
  await world.start();
  origin = world.origin('widget');
  gh = await startFakeGitHub();
  gh.addToken(ISSUES_TOKEN, 'thopter-hub');
  gh.addToken(CODER_TOKEN, 'thopter-coder');
  for (const repo of [REPO, OTHER]) {
    gh.addRepo(repo, { cloneUrl: origin });
    for (const who of ['thopter-hub', 'thopter-coder', 'alice', 'bob']) gh.setPermission(repo, who, 'write');
  }
  model = await new FakeAnthropic({
    apiKey: TEST_API_KEY,
    script: [
      { tools: [bash('cat prompt.md', 'Read the instructions')], usage: costs(500) },
      // Work left uncommitted: only the save can keep it.
      { tools: [bash('cd widget && echo "draft notes" > NOTES.md', 'Write notes')], usage: costs(420) },
      answer,
      answer,
      answer,
      answer,
    ],
  }).start();
  const settings = { issuesPAT: ISSUES_TOKEN, agentCoderPAT: CODER_TOKEN };
  hub = await world.hub({
    THOPTER_AGENT_COMMAND: DEFAULT_AGENT_COMMAND,
    THOPTER_ENV_FILE: claudeEnvFile(path.join(world.dir, 'fixtures'), model.url),
    GITHUB_API_URL: gh.url,
    GITHUB_INTEGRATION_JSON: JSON.stringify({
      repositories: { [REPO]: { ...settings, dailyBudgetUsd: 1 }, [OTHER]: settings },
    }),
    GITHUB_ISSUES_POLLING_INTERVAL: '1',
    HUB_PUBLIC_URL: 'https://hub.example.test',
    THOPTER_PRICES: JSON.stringify(PRICES),
    THOPTER_MAX_COST_USD: '1',
    THOPTER_DAILY_BUDGET_USD_PER_PERSON: '1',
  });
  await makeGoldenClaude(hub.url, 'default', { trusted: path.join(world.dir, 'data', 'thopters') });
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
