import type { Redis } from 'ioredis';
import type { Config } from '../config.js';
import { ThopterError } from '../errors.js';
import { usdText } from '../processors/budget.js';
import { readUsageRows, usageKeys, type UsageRow } from '../usage/totals.js';

/** A launch past a daily budget: refused until `until`, when the day's budgets start again. */
export class OverBudgetError extends ThopterError {
  constructor(
    message: string,
    readonly until: Date,
  ) {
    super('over-budget', message);
  }
}

/** The next UTC midnight after `now`: when a day's budgets start again. */
export function nextUtcMidnight(now: Date): Date {
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1));
}

/**
 * Refuses a launch (ThopterError `over-budget`) when today's spend (UTC, from the usage aggregates
 * of usage/totals.ts) of its repository, or of the person who asked, has reached its daily budget:
 * a repository's `dailyBudgetUsd` in GITHUB_INTEGRATION_JSON, else
 * THOPTER_DAILY_BUDGET_USD_PER_REPOSITORY; THOPTER_DAILY_BUDGET_USD_PER_PERSON for people (API
 * launches, asked for as `api`, are the operator's and have no personal budget).
 *
 * A refusal, not a wait: a request held until midnight would hold its place in line for hours and
 * start when nobody is watching; the reply says when budgets start again, and asking again then is
 * one comment. Thopters already running are not stopped by a daily budget (THOPTER_MAX_COST_USD
 * caps each one).
 */
export async function refuseOverDailyBudget(
  redis: Redis,
  config: Pick<Config, 'redisPrefix' | 'repositories' | 'dailyBudgetUsd'>,
  launch: { repository: string; requestedBy: string; source: 'api' | 'github' },
  now = new Date(),
): Promise<void> {
  const repositoryBudget =
    config.repositories[launch.repository]?.dailyBudgetUsd ?? config.dailyBudgetUsd.perRepository;
  const personBudget = launch.source === 'github' ? config.dailyBudgetUsd.perPerson : undefined;
  if (repositoryBudget === undefined && personBudget === undefined) return;
  const rows = await readUsageRows(redis, usageKeys(config.redisPrefix, now).day);
  const until = nextUtcMidnight(now);
  const refuse = (who: string, spent: number, budget: number, setting: string) => {
    throw new OverBudgetError(
      `budget: ${who} has spent ${usdText(spent)} today of a daily budget of ${usdText(budget)}, so no new thopter starts until ${until.toISOString()} (the next UTC midnight): ask again then, or have an operator raise ${setting}`,
      until,
    );
  };
  // A model with no price adds nothing: what is known is counted.
  const spentBy = (match: (row: UsageRow) => boolean) =>
    rows.filter(match).reduce((sum, row) => sum + (row.costUsd ?? 0), 0);
  if (repositoryBudget !== undefined) {
    const spent = spentBy((row) => row.repository === launch.repository);
    if (spent >= repositoryBudget) {
      const setting = config.repositories[launch.repository]?.dailyBudgetUsd
        ? `its dailyBudgetUsd in GITHUB_INTEGRATION_JSON`
        : 'THOPTER_DAILY_BUDGET_USD_PER_REPOSITORY';
      refuse(launch.repository, spent, repositoryBudget, setting);
    }
  }
  if (personBudget !== undefined) {
    const spent = spentBy((row) => row.requestedBy === launch.requestedBy);
    if (spent >= personBudget)
      refuse(`@${launch.requestedBy}`, spent, personBudget, 'THOPTER_DAILY_BUDGET_USD_PER_PERSON');
  }
}
