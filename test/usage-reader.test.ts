import assert from 'node:assert/strict';
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../src/config.js';
import { ThopterStore } from '../src/thopters/store.js';
import { renderReport } from '../src/github/report.js';
import { costOf, DEFAULT_PRICES, priceOf } from '../src/usage/prices.js';
import { TranscriptUsageReader, UsageCounter } from '../src/usage/reader.js';
import { readUsageRows, usageKeys, usageSummary } from '../src/usage/totals.js';
import { TestWorld, writeFixture } from './helpers/env.js';

/** A transcript line as Claude Code writes it: one per content block of an assistant message. */
function line(id: string, model: string, usage: Partial<Record<string, number>>, block = 'text') {
  return (
    JSON.stringify({
      type: 'assistant',
      requestId: `req_${id}`,
      sessionId: 's',
      message: {
        id,
        model,
        role: 'assistant',
        content: [{ type: block, text: 'é…' }],
        usage: {
          input_tokens: usage.input ?? 0,
          output_tokens: usage.output ?? 0,
          cache_read_input_tokens: usage.cacheRead ?? 0,
          cache_creation_input_tokens: usage.cacheCreation ?? 0,
        },
      },
    }) + '\n'
  );
}
const user = (text: string) =>
  JSON.stringify({ type: 'user', message: { role: 'user', content: text } }) + '\n';

describe('the usage reader', () => {
  const world = new TestWorld();
  before(() => world.start());
  after(() => world.close());

  it('counts a message repeated over several lines (one per content block) once', () => {
    const c = new UsageCounter();
    const usage = { input: 100, output: 20, cacheRead: 5, cacheCreation: 7 };
    for (const l of [
      line('msg_1', 'claude-opus-5-5', usage),
      line('msg_1', 'claude-opus-5-5', usage, 'tool_use'),
    ])
      c.addLine(l.trimEnd());
    c.addLine(line('msg_1', 'claude-opus-5-5', usage, 'tool_use').trimEnd());
    assert.deepEqual(c.snapshot(), {
      'claude-opus-5-5': { input: 100, output: 20, cacheRead: 5, cacheCreation: 7, messages: 1 },
    });
  });

  it('adds what a later line of the same message counts beyond the first, skips synthetic replies, and renames a model name unfit for a label', () => {
    const c = new UsageCounter();
    c.addLine(line('msg_1', 'claude-opus-5-5', { input: 100, output: 1 }).trimEnd());
    c.addLine(line('msg_1', 'claude-opus-5-5', { input: 100, output: 30 }).trimEnd());
    c.addLine(line('msg_2', '<synthetic>', {}).trimEnd());
    c.addLine('{not json');
    c.addLine(line('msg_3', 'evil\tmodel', { input: 2 }).trimEnd());
    assert.deepEqual(c.snapshot(), {
      'claude-opus-5-5': { input: 100, output: 30, cacheRead: 0, cacheCreation: 0, messages: 1 },
      'unnamed-model': { input: 2, output: 0, cacheRead: 0, cacheCreation: 0, messages: 1 },
    });
  });

  it('reads only new bytes, a line split across two reads once whole, and every session file', async () => {
    const projects = path.join(world.dir, 'home-a', '.claude', 'projects');
    const project = path.join(projects, '-work-repo');
    mkdirSync(project, { recursive: true });
    const reader = new TranscriptUsageReader(projects);
    assert.deepEqual(await reader.read(), {}, 'no transcript yet');

    const first = path.join(project, 'session-1.jsonl');
    const a = line('msg_a', 'claude-opus-5-5', { input: 10, output: 3 });
    const b = line('msg_b', 'claude-opus-5-5', { input: 20, output: 4, cacheRead: 100 });
    writeFileSync(first, user('hello') + a + b.slice(0, 25));
    assert.deepEqual(await reader.read(), {
      'claude-opus-5-5': { input: 10, output: 3, cacheRead: 0, cacheCreation: 0, messages: 1 },
    });
    // The rest of the torn line, and the same message again on its next block's line.
    appendFileSync(first, b.slice(25) + b);
    assert.deepEqual(await reader.read(), {
      'claude-opus-5-5': { input: 30, output: 7, cacheRead: 100, cacheCreation: 0, messages: 2 },
    });
    // A new session (a restart, /clear) in a new file: summed with the first.
    writeFileSync(
      path.join(project, 'session-2.jsonl'),
      line('msg_c', 'claude-haiku-4-5-20251001', { input: 1, output: 2 }) +
        line('msg_a', 'claude-opus-5-5', { input: 10, output: 3 }),
    );
    assert.deepEqual(await reader.read(), {
      'claude-opus-5-5': { input: 30, output: 7, cacheRead: 100, cacheCreation: 0, messages: 2 },
      'claude-haiku-4-5-20251001': { input: 1, output: 2, cacheRead: 0, cacheCreation: 0, messages: 1 },
    });
    // Nothing new: the same totals, nothing read again.
    assert.deepEqual((await reader.read())['claude-opus-5-5']?.messages, 2);
    // A subagent (the Task tool) writes its own transcript under the session's folder.
    const subagents = path.join(project, 'session-1', 'subagents');
    mkdirSync(subagents, { recursive: true });
    writeFileSync(
      path.join(subagents, 'agent-a1.jsonl'),
      line('msg_sub', 'claude-haiku-4-5-20251001', { input: 40, output: 5 }),
    );
    assert.deepEqual((await reader.read())['claude-haiku-4-5-20251001'], {
      input: 41,
      output: 7,
      cacheRead: 0,
      cacheCreation: 0,
      messages: 2,
    });
  });

  it('reads a line longer than its read buffer', async () => {
    const projects = path.join(world.dir, 'home-b', '.claude', 'projects');
    mkdirSync(path.join(projects, 'p'), { recursive: true });
    const big = JSON.stringify({
      type: 'assistant',
      message: {
        id: 'msg_big',
        model: 'claude-opus-5-5',
        content: 'x'.repeat(9 * 1024 * 1024),
        usage: { input_tokens: 7, output_tokens: 9 },
      },
    });
    writeFileSync(path.join(projects, 'p', 's.jsonl'), big + '\n');
    const totals = await new TranscriptUsageReader(projects).read();
    assert.equal(totals['claude-opus-5-5']?.output, 9);
  });

  it("prices Claude Code's models, finds a dated name by its bare one, and leaves an unknown model unpriced", () => {
    assert.deepEqual(priceOf(DEFAULT_PRICES, 'claude-opus-5-5'), {
      input: 4,
      output: 20,
      cacheRead: 0.2,
      cacheCreation: 5,
    });
    assert.equal(priceOf(DEFAULT_PRICES, 'claude-sonnet-4-5')?.input, 3);
    const cost = costOf(DEFAULT_PRICES, 'claude-opus-5-5', {
      input: 1_000_000,
      output: 100_000,
      cacheRead: 0,
      cacheCreation: 0,
    });
    assert.equal(cost, 6);
    assert.equal(
      costOf(DEFAULT_PRICES, 'claude-unknown-9', { input: 1, output: 1, cacheRead: 0, cacheCreation: 0 }),
      null,
    );
  });

  it('takes price overrides from THOPTER_PRICES or a file, and refuses bad ones naming the variable', () => {
    const env = world.env();
    const over = loadConfig({
      ...env,
      THOPTER_PRICES: '{"claude-new-1": {"input": 1, "output": 2, "cacheRead": 0, "cacheCreation": 0}}',
    });
    assert.equal(over.prices['claude-new-1']?.output, 2);
    assert.equal(over.prices['claude-opus-5-5']?.input, 4, 'the defaults stay for the rest');
    const file = writeFixture(
      world.dir,
      'prices.json',
      '{"claude-opus-5-5": {"input": 9, "output": 9, "cacheRead": 9, "cacheCreation": 9}}',
    );
    assert.equal(loadConfig({ ...env, THOPTER_PRICES_FILE: file }).prices['claude-opus-5-5']?.input, 9);
    const refused = (extra: Record<string, string>) => {
      try {
        loadConfig({ ...env, ...extra });
      } catch (err) {
        assert.ok(err instanceof ConfigError);
        return err.message;
      }
      assert.fail('accepted');
    };
    assert.match(
      refused({ THOPTER_PRICES: '{"m": {"input": 1}}' }),
      /THOPTER_PRICES at m\.output: .*USD per million tokens/,
    );
    assert.match(refused({ THOPTER_PRICES: 'nope' }), /THOPTER_PRICES is not valid JSON/);
    assert.match(
      refused({ THOPTER_PRICES_FILE: path.join(world.dir, 'missing.json') }),
      /THOPTER_PRICES_FILE names a file that does not exist/,
    );
    assert.match(refused({ THOPTER_PRICES: '{}', THOPTER_PRICES_FILE: file }), /both set: keep one/);
  });

  it('records usage once however often the same totals are written, and aggregates by day', async () => {
    const store = new ThopterStore(world.client, 'u1');
    const now = new Date();
    const request = {
      id: 't1',
      source: 'api' as const,
      repository: 'acme/app',
      cloneUrl: '/x',
      repoName: 'app',
      issue: { title: 't', body: 'b', comments: [] },
      gc: 'default',
      prompt: 'default',
      priority: 1,
      requestedBy: 'alice',
      createdAt: now.toISOString(),
    };
    await store.create(request);
    const totals = {
      'claude-opus-5-5': { input: 1_000_000, output: 100_000, cacheRead: 0, cacheCreation: 0, messages: 3 },
    };
    assert.equal(await store.setUsage('t1', totals, DEFAULT_PRICES, now), true);
    assert.equal(await store.setUsage('t1', totals, DEFAULT_PRICES, now), false, 'the same totals again');
    const usage = (await store.get('t1'))?.usage;
    assert.equal(usage?.costUsd, 6);
    assert.deepEqual(usage?.tokens, { input: 1_000_000, output: 100_000, cacheRead: 0, cacheCreation: 0 });
    assert.equal(usage?.messages, 3);
    // An unknown model: its tokens count, the cost becomes unknown rather than a silent $0.
    await store.setUsage(
      't1',
      { ...totals, 'claude-x': { input: 5, output: 5, cacheRead: 0, cacheCreation: 0, messages: 1 } },
      DEFAULT_PRICES,
      now,
    );
    const after = (await store.get('t1'))?.usage;
    assert.equal(after?.costUsd, null);
    assert.equal(after?.byModel['claude-opus-5-5']?.costUsd, 6);
    assert.equal(after?.tokens.input, 1_000_005);
    const rows = await readUsageRows(world.client, usageKeys('u1', now).day);
    assert.deepEqual(
      rows.map((r) => [r.repository, r.requestedBy, r.model, r.tokens.input, r.costUsd]).sort(),
      [
        ['acme/app', 'alice', 'claude-opus-5-5', 1_000_000, 6],
        ['acme/app', 'alice', 'claude-x', 5, null],
      ],
    );
    const summary = await usageSummary(world.client, 'u1', now);
    assert.equal(summary.today.byPerson.alice?.costUsd, null);
    assert.equal(summary.thisMonth.byRepository['acme/app']?.tokens.output, 100_005);
    // The report says the cost is unknown, and why; never $0.
    const report = renderReport((await store.get('t1'))!, { key: 'end', publicUrl: 'https://hub.test' });
    assert.match(
      report,
      /^Used 1M input, 100k output tokens \(claude-opus-5-5, claude-x\), cost unknown \(no price for claude-x: see THOPTER_PRICES\)\.$/m,
    );
  });
});
