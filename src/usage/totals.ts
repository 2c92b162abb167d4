import type { Redis } from 'ioredis';
import { noTokens, TOKEN_KINDS, type TokenCounts, type TokenKind } from './tokens.js';

/**
 * The Redis hashes that aggregate usage over every thopter: one per UTC day, one per UTC month,
 * one for all time. ThopterStore.setUsage adds to all three in the script that moves a thopter's
 * usage, so they never count a token twice and survive hub restarts.
 */
export function usageKeys(prefix: string, at: Date) {
  const day = at.toISOString().slice(0, 10);
  return {
    day: `${prefix}:usage:day:${day}`,
    month: `${prefix}:usage:month:${day.slice(0, 7)}`,
    all: `${prefix}:usage:all`,
  };
}

/** One line of an aggregate: the usage of one repository, person and model. */
export interface UsageRow {
  repository: string;
  requestedBy: string;
  model: string;
  tokens: TokenCounts;
  /** USD; null when the model has no price (its tokens are counted all the same). */
  costUsd: number | null;
}

/** Every line of one aggregate hash. */
export async function readUsageRows(redis: Redis, key: string): Promise<UsageRow[]> {
  const fields = await redis.hgetall(key);
  const rows = new Map<string, UsageRow & { unpriced: boolean }>();
  for (const [field, value] of Object.entries(fields)) {
    const [repository, requestedBy, model, kind] = field.split('\t');
    if (!repository || !requestedBy || !model || !kind) continue;
    const id = `${repository}\t${requestedBy}\t${model}`;
    let row = rows.get(id);
    if (!row) {
      row = { repository, requestedBy, model, tokens: noTokens(), costUsd: 0, unpriced: false };
      rows.set(id, row);
    }
    if ((TOKEN_KINDS as readonly string[]).includes(kind)) row.tokens[kind as TokenKind] += Number(value);
    else if (kind === 'cost') row.costUsd = (row.costUsd ?? 0) + Number(value);
    else if (kind === 'unpriced' && Number(value) > 0) row.unpriced = true;
  }
  return [...rows.values()].map(({ unpriced, ...row }) => ({
    ...row,
    costUsd: unpriced ? null : row.costUsd,
  }));
}

/** Usage summed over rows that share a repository, or a person. */
export interface UsageGroup {
  tokens: TokenCounts;
  costUsd: number | null;
  models: string[];
}

export function groupUsage(rows: UsageRow[], by: 'repository' | 'requestedBy'): Record<string, UsageGroup> {
  const out: Record<string, UsageGroup> = {};
  for (const row of rows) {
    const g = (out[row[by]] ??= { tokens: noTokens(), costUsd: 0, models: [] });
    for (const kind of TOKEN_KINDS) g.tokens[kind] += row.tokens[kind];
    g.costUsd = g.costUsd === null || row.costUsd === null ? null : g.costUsd + row.costUsd;
    if (!g.models.includes(row.model)) g.models.push(row.model);
  }
  return out;
}

/** Today's and this month's usage (UTC) by repository and by person: GET /api/usage and the dashboard. */
export async function usageSummary(redis: Redis, prefix: string, now = new Date()) {
  const keys = usageKeys(prefix, now);
  const [today, month] = await Promise.all([
    readUsageRows(redis, keys.day),
    readUsageRows(redis, keys.month),
  ]);
  const period = (rows: UsageRow[]) => ({
    total: groupUsage(
      rows.map((r) => ({ ...r, repository: '*' })),
      'repository',
    )['*'] ?? {
      tokens: noTokens(),
      costUsd: 0,
      models: [],
    },
    byRepository: groupUsage(rows, 'repository'),
    byPerson: groupUsage(rows, 'requestedBy'),
  });
  return {
    day: keys.day.slice(keys.day.lastIndexOf(':') + 1),
    month: keys.month.slice(keys.month.lastIndexOf(':') + 1),
    today: period(today),
    thisMonth: period(month),
  };
}
export type UsageSummary = Awaited<ReturnType<typeof usageSummary>>;
