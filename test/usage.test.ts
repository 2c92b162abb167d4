import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Hub } from '../src/hub.js';
import { bash, FakeAnthropic, type Step } from './fakes/anthropic.js';
import type { FakeGitHub } from './fakes/github.js';
import { api, TestWorld, TOKEN } from './helpers/env.js';
import { startIssueAgentWorld } from './helpers/issue-agent.js';
import { clearOfUtcMidnight, waitFor } from './helpers/wait.js';

const world = new TestWorld();
const REPO = 'acme/meter';
const MODEL = 'claude-opus-5-5';
let gh: FakeGitHub;
let model: FakeAnthropic;
let hub: Hub;
let env: Record<string, string>;

/**
 * The model's responses, each with known usage. Each of the first two carries text and a tool call:
 * one message of two content blocks, which the transcript writes as two lines.
 */
const turnOne: Step[] = [
  {
    text: 'Let me look.',
    tools: [bash('echo first', 'Look around')],
    usage: {
      input_tokens: 1200,
      output_tokens: 340,
      cache_read_input_tokens: 5000,
      cache_creation_input_tokens: 700,
    },
  },
  {
    text: 'And once more.',
    tools: [bash('echo second', 'Look again')],
    usage: {
      input_tokens: 1500,
      output_tokens: 210,
      cache_read_input_tokens: 6000,
      cache_creation_input_tokens: 0,
    },
  },
  {
    text: 'Turn one is done.',
    usage: {
      input_tokens: 1600,
      output_tokens: 90,
      cache_read_input_tokens: 6200,
      cache_creation_input_tokens: 100,
    },
  },
];
const turnTwo: Step[] = [
  {
    text: 'Turn two is done too.',
    usage: {
      input_tokens: 2000,
      output_tokens: 60,
      cache_read_input_tokens: 7000,
      cache_creation_input_tokens: 50,
    },
  },
];

const sum = (steps: Step[]) => {
  const t = { input: 0, output: 0, cacheRead: 0, cacheCreation: 0 };
  for (const s of steps) {
    t.input += s.usage!.input_tokens!;
    t.output += s.usage!.output_tokens!;
    t.cacheRead += s.usage!.cache_read_input_tokens!;
    t.cacheCreation += s.usage!.cache_creation_input_tokens!;
  }
  return t;
};
/** Claude Code's price of claude-opus-5-5, USD per million: input 4, output 20, cache read 0.2, cache write 5. */
const costOf = (t: ReturnType<typeof sum>) =>
  (t.input * 4 + t.output * 20 + t.cacheRead * 0.2 + t.cacheCreation * 5) / 1e6;
const close = (a: number, b: number) => Math.abs(a - b) < 1e-9;

/** What the model was asked, for a failure's message: a retried request would take a step more. */
const steps = () => JSON.stringify(model.requests.map((r) => r.step ?? null));

async function page(url: string, route: string): Promise<string> {
  const res = await fetch(`${url}${route}`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(res.status, 200, route);
  return res.text();
}

/** The value of one series in a Prometheus text scrape. */
function metric(text: string, name: string, labels: Record<string, string>): number | undefined {
  const want = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .sort();
  for (const line of text.split('\n')) {
    const m = /^([a-z_]+)\{(.*)\} (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = m[2]!.split(/,(?=[a-z_]+=")/).sort();
    if (JSON.stringify(have) === JSON.stringify(want)) return Number(m[3]);
  }
  return undefined;
}

before(async () => {
  // what turn one spent is read back as today's after turn two.
  await clearOfUtcMidnight(10 * 60_000);
  await world.start();
  ({ gh, model, hub, env } = await startIssueAgentWorld(world, {
    repositories: { [REPO]: {} },
    script: [...turnOne],
    env: { THOPTER_PULL_REQUEST: 'off' },
  }));
});
after(async () => {
  await model?.close();
  await gh?.close();
  await world.close();
});

describe('usage metering with the real claude', () => {
  let issue: number;
  let id: string;

  it('shows the usage the model returned, each message once, on the report, API, usage API, metrics and dashboard', async () => {
    issue = gh.addIssue(REPO, { title: 'Meter me', body: 'Count it.', user: 'alice' }).number;
    gh.addComment(REPO, issue, { user: 'alice', body: '/thopter --gc default' });
    const report = await waitFor(
      'the report of the first turn',
      () => gh.comments(REPO, issue).find((c) => /^<!-- thopter-report:.*:turn-1 -->/.test(c.body ?? '')),
      { timeoutMs: 180_000 },
    );
    id = /thopter-report:(thopter-[a-f0-9]+):turn-1/.exec(report.body ?? '')![1]!;
    const want = sum(turnOne);
    const cost = costOf(want);
    // The report carries the usage as read when it was written: Claude Code may write its
    // transcript's last line a moment after the turn ended, so the exact figures are checked on
    // the end report (below); here, that it is there.
    assert.match(
      report.body ?? '',
      new RegExp(`^Used \\S+ input, \\S+ output.* tokens \\(${MODEL}\\), about \\$`, 'm'),
    );

    const view = await waitFor('the usage of the first turn', async () => {
      const v = (await api(hub.url, 'GET', `/api/thopters/${id}`)).body;
      return v.usage?.messages >= 3 ? v : undefined;
    });
    // The transcript has a line per content block, each with its message's usage: more lines with
    // usage than messages, so summing lines would count more than the model returned.
    const projects = path.join(world.dir, 'data', 'thopters', view.machine.id, 'home', '.claude', 'projects');
    const usageLines = readdirSync(projects)
      .flatMap((p) => readdirSync(path.join(projects, p)).map((f) => path.join(projects, p, f)))
      .filter((f) => f.endsWith('.jsonl'))
      .flatMap((f) => readFileSync(f, 'utf8').split('\n'))
      .filter((l) => l.includes('"usage"') && JSON.parse(l).type === 'assistant');
    assert.equal(usageLines.length, 5, `two messages of two blocks and one of one: ${usageLines.join('\n')}`);
    assert.deepEqual(view.usage.tokens, want, `steps: ${steps()}`);
    assert.equal(view.usage.messages, 3);
    assert.deepEqual(Object.keys(view.usage.byModel), [MODEL]);
    assert.ok(close(view.usage.costUsd, cost), `${view.usage.costUsd} vs ${cost}`);

    const summary = (await api(hub.url, 'GET', '/api/usage')).body;
    for (const period of [summary.today, summary.thisMonth]) {
      assert.deepEqual(period.byRepository[REPO].tokens, want);
      assert.deepEqual(period.byPerson.alice.tokens, want);
      assert.ok(close(period.byPerson.alice.costUsd, cost));
      assert.deepEqual(period.byPerson.alice.models, [MODEL]);
    }
    assert.equal((await api(hub.url, 'GET', '/api/usage', undefined, 'wrong-token-wrong-token')).status, 401);

    const metrics = await page(hub.url, '/metrics');
    const labels = { repository: REPO, requested_by: 'alice', model: MODEL };
    assert.equal(metric(metrics, 'thopter_tokens_total', { ...labels, kind: 'input' }), want.input);
    assert.equal(metric(metrics, 'thopter_tokens_total', { ...labels, kind: 'output' }), want.output);
    assert.equal(metric(metrics, 'thopter_tokens_total', { ...labels, kind: 'cache_read' }), want.cacheRead);
    assert.equal(
      metric(metrics, 'thopter_tokens_total', { ...labels, kind: 'cache_creation' }),
      want.cacheCreation,
    );
    assert.ok(close(metric(metrics, 'thopter_cost_usd_total', labels)!, cost));

    const detail = await page(hub.url, `/thopters/${id}`);
    assert.match(detail, /<dt>Usage<\/dt>/);
    for (const n of [want.input, want.output, want.cacheRead, want.cacheCreation])
      assert.ok(detail.includes(`>${n.toLocaleString('en-US')}<`), `the page shows ${n}`);
    const usagePage = await page(hub.url, '/usage');
    assert.match(usagePage, new RegExp(`data-name="${REPO}"`));
    assert.match(usagePage, /data-name="alice"/);
    assert.ok(usagePage.includes(`>${want.cacheRead.toLocaleString('en-US')}<`));
  });

  it('sums a second turn after a restart of the hub, neither resetting nor counting twice', async () => {
    // A new hub on the same Redis: its reader starts from the first byte of every transcript.
    await world.stopHub(hub);
    hub = await world.hub(env);
    model.push(...turnTwo);
    const record = (await hub.store.get(id))!;
    const tmuxEnv = {
      ...process.env,
      TMUX_TMPDIR: path.join(world.dir, 'data', 'thopters', record.machine!.id, 'tmux'),
    };
    execFileSync('tmux', ['send-keys', '-t', 'thopter', '-l', 'Carry on, please.'], { env: tmuxEnv });
    execFileSync('tmux', ['send-keys', '-t', 'thopter', 'Enter'], { env: tmuxEnv });
    const want = sum([...turnOne, ...turnTwo]);
    const view = await waitFor(
      'the usage of both turns',
      async () => {
        const v = (await api(hub.url, 'GET', `/api/thopters/${id}`)).body;
        return v.usage.messages >= 4 ? v : undefined;
      },
      { timeoutMs: 120_000 },
    );
    assert.deepEqual(view.usage.tokens, want, `steps: ${steps()}`);
    assert.equal(view.usage.messages, 4);
    assert.ok(close(view.usage.costUsd, costOf(want)));
    const summary = (await api(hub.url, 'GET', '/api/usage')).body;
    assert.deepEqual(summary.today.byPerson.alice.tokens, want);
    const metrics = await page(hub.url, '/metrics');
    assert.equal(
      metric(metrics, 'thopter_tokens_total', {
        repository: REPO,
        requested_by: 'alice',
        model: MODEL,
        kind: 'input',
      }),
      want.input,
    );
    // Once more after the thopter ends: the teardown's last read changes nothing.
    assert.equal((await api(hub.url, 'DELETE', `/api/thopters/${id}`)).status, 202);
    await waitFor('the thopter to end', async () => (await hub.store.state(id)) === 'destroyed', {
      timeoutMs: 60_000,
    });
    assert.deepEqual((await hub.store.get(id))!.usage!.tokens, want);
    // The end report: 6.3k input, 700 output, 24.2k cache read, 850 cache write tokens, about $0.08.
    const end = await waitFor('the end report', () =>
      gh.comments(REPO, issue).find((c) => /^<!-- thopter-report:.*:end -->/.test(c.body ?? '')),
    );
    const cost = costOf(want).toFixed(2).replace('.', '\\.');
    assert.match(
      end.body ?? '',
      new RegExp(
        `^Used 6\\.3k input, 700 output, 24\\.2k cache read, 850 cache write tokens \\(${MODEL}\\), about \\$${cost}\\.$`,
        'm',
      ),
    );
    // And the status comment, once the thopter ended.
    await waitFor('the status comment to say what it cost', () =>
      gh
        .comments(REPO, issue)
        .some(
          (c) =>
            /^<!-- thopter-ack:/.test(c.body ?? '') &&
            new RegExp(`^Used 6\\.3k input, .*about \\$${cost}\\.$`, 'm').test(c.body ?? ''),
        ),
    );
    assert.deepEqual(
      (await api(hub.url, 'GET', '/api/usage')).body.thisMonth.byRepository[REPO].tokens,
      want,
    );
  });
});
