import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadConfig } from '../../src/config.js';
import { pino } from 'pino';
import { keepToBudget } from '../../src/processors/budget.js';
import { nextUtcMidnight } from '../../src/scanner/budget.js';
import type { ThopterRecord } from '../../src/thopters/record.js';

describe('budgets: configuration and the day', () => {
  it('reads the caps in USD, unset or 0 meaning none', () => {
    const none = loadConfig({});
    assert.equal(none.maxCostUsd, undefined);
    assert.deepEqual(none.dailyBudgetUsd, { perRepository: undefined, perPerson: undefined });
    const set = loadConfig({
      THOPTER_MAX_COST_USD: '2.50',
      THOPTER_DAILY_BUDGET_USD_PER_REPOSITORY: '$20',
      THOPTER_DAILY_BUDGET_USD_PER_PERSON: '0',
    });
    assert.equal(set.maxCostUsd, 2.5);
    assert.deepEqual(set.dailyBudgetUsd, { perRepository: 20, perPerson: undefined });
  });

  it('names the variable and the fix for an amount that is not one', () => {
    assert.throws(
      () => loadConfig({ THOPTER_MAX_COST_USD: 'ten dollars' }),
      /THOPTER_MAX_COST_USD.*"ten dollars" is not an amount in USD: write it like 5 or 12\.50 \(0 = no limit\)/s,
    );
    assert.throws(
      () => loadConfig({ THOPTER_DAILY_BUDGET_USD_PER_PERSON: '-3' }),
      /THOPTER_DAILY_BUDGET_USD_PER_PERSON/,
    );
  });

  it('takes a per-repository dailyBudgetUsd in GITHUB_INTEGRATION_JSON, and refuses a bad one', () => {
    const json = (budget: unknown) =>
      JSON.stringify({ repositories: { 'acme/widget': { issuesPAT: 'x', dailyBudgetUsd: budget } } });
    assert.equal(
      loadConfig({ GITHUB_INTEGRATION_JSON: json(12.5) }).repositories['acme/widget']?.dailyBudgetUsd,
      12.5,
    );
    assert.throws(
      () => loadConfig({ GITHUB_INTEGRATION_JSON: json('lots') }),
      /GITHUB_INTEGRATION_JSON.*repositories\.acme\/widget\.dailyBudgetUsd/s,
    );
  });

  it('starts a new day at the next UTC midnight, whatever the time zone', () => {
    assert.equal(nextUtcMidnight(new Date('2026-12-03T07:00:00Z')).toISOString(), '2026-12-04T00:00:00.000Z');
    assert.equal(
      nextUtcMidnight(new Date('2026-12-31T23:59:59.999Z')).toISOString(),
      '2027-01-01T00:00:00.000Z',
    );
    assert.equal(nextUtcMidnight(new Date('2026-12-04T00:00:00Z')).toISOString(), '2026-12-05T00:00:00.000Z');
  });
});

describe('the per-run cap', () => {
  const tokens = { input: 0, output: 0, cacheRead: 0, cacheCreation: 0 };
  const running = (byModel: Record<string, number | null>) =>
    ({
      id: 'thopter-000000000001',
      state: 'running',
      usage: {
        tokens,
        byModel: Object.fromEntries(
          Object.entries(byModel).map(([model, costUsd]) => [model, { tokens, messages: 1, costUsd }]),
        ),
        costUsd: Object.values(byModel).some((c) => c === null)
          ? null
          : Object.values(byModel).reduce<number>((a, b) => a + (b ?? 0), 0),
        messages: 1,
        updatedAt: new Date().toISOString(),
      },
    }) as unknown as ThopterRecord;
  const deps = { config: { maxCostUsd: 1 } } as unknown as Parameters<typeof keepToBudget>[0];
  const log = pino({ level: 'silent' });

  it('counts the priced models when another model has no price', async () => {
    const reason = await keepToBudget(deps, running({ 'claude-opus-5-5': 1.2, 'some-new-model': null }), log);
    assert.match(reason ?? '', /^budget: spent \$1\.20 of its \$1\.00/);
  });

  it('does not cap a run whose models all lack a price', async () => {
    assert.equal(await keepToBudget(deps, running({ 'some-new-model': null }), log), undefined);
  });
});
