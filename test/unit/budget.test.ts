import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadConfig } from '../../src/config.js';
import { nextUtcMidnight } from '../../src/scanner/budget.js';

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
