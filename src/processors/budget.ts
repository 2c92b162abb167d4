import type { Logger } from '../log.js';
import type { ThopterRecord } from '../thopters/record.js';
import type { ProcessorDeps } from './deps.js';
import { tellAgent } from './tell.js';

/** The share of THOPTER_MAX_COST_USD at which the agent is told to wrap up. */
const WRAP_UP_AT = 0.9;
/** The told message's key: once per thopter, whichever hub sees the figure first. */
export const WRAP_UP_KEY = 'budget-90';

export const usdText = (n: number) => `$${n < 1 ? n.toFixed(4) : n.toFixed(2)}`;

/**
 * Keeps a running thopter to THOPTER_MAX_COST_USD, from its usage as last read (usage/): at 90 %
 * its agent is told once to commit and wrap up; at 100 % the returned reason (starting `budget`)
 * is for its destroy request, whose teardown saves the work first. A model the price table lacks
 * adds nothing (its cost is unknown, and the dashboard says so), but the priced models still count:
 * one unknown name must not lift the cap off the rest.
 */
export async function keepToBudget(
  deps: Pick<ProcessorDeps, 'config' | 'store' | 'queues'>,
  record: ThopterRecord,
  log: Logger,
): Promise<string | undefined> {
  const cap = deps.config.maxCostUsd;
  const spent = pricedSpend(record);
  if (!cap || record.state !== 'running' || spent === undefined) return undefined;
  if (spent >= cap) {
    log.warn({ spentUsd: spent, capUsd: cap }, 'the run reached its budget; saving and ending it');
    return `budget: spent ${usdText(spent)} of its ${usdText(cap)} (THOPTER_MAX_COST_USD)`;
  }
  if (spent < cap * WRAP_UP_AT || record.told?.some((m) => m.key === WRAP_UP_KEY)) return undefined;
  await tellAgent(deps, record.id, {
    key: WRAP_UP_KEY,
    text:
      `Budget: this run has spent ${usdText(spent)} of its ${usdText(cap)} limit. Commit your work on ` +
      'the work branch now, push it, and wrap up with a short summary of what is done and what is ' +
      'left. At the limit the hub saves whatever is uncommitted and ends this session.',
  });
  await deps.store.addEvent(
    record.id,
    'budget',
    `spent ${usdText(spent)} of ${usdText(cap)} (90 %): the agent was told to wrap up`,
  );
  log.info({ spentUsd: spent, capUsd: cap }, 'the run reached 90 % of its budget; the agent is told');
  return undefined;
}

/** What the thopter's priced models cost so far; undefined when none has a price. */
function pricedSpend(record: ThopterRecord): number | undefined {
  const usage = record.usage;
  if (!usage) return undefined;
  if (typeof usage.costUsd === 'number') return usage.costUsd;
  const priced = Object.values(usage.byModel ?? {})
    .map((m) => m.costUsd)
    .filter((c): c is number => typeof c === 'number');
  return priced.length ? priced.reduce((a, b) => a + b, 0) : undefined;
}
