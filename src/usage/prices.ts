import { z } from 'zod';
import { TOKEN_KINDS, type TokenCounts } from './tokens.js';

/** USD per million tokens of each kind, for one model. */
export type ModelPrice = TokenCounts;

/** Model name → its price. A model not in it is counted in tokens and shown as "cost unknown". */
export type PriceTable = Record<string, ModelPrice>;

const tier = (input: number, output: number, cacheCreation: number, cacheRead: number): ModelPrice => ({
  input,
  output,
  cacheRead,
  cacheCreation,
});

/*
 * The tiers and model names of the model catalog Claude Code 2.1.328 ships (its own cost figures
 * use them). Cache creation is priced at the 5-minute cache write: the transcript's usage gives one
 * cache creation count, and Claude Code writes 5-minute cache entries unless told otherwise.
 */
const T2_10 = tier(2, 10, 2.5, 0.2);
const T2_10_R010 = tier(2, 10, 2.5, 0.1);
const T3_15 = tier(3, 15, 3.75, 0.3);
const T4_20_R020 = tier(4, 20, 5, 0.2);
const T5_25 = tier(5, 25, 6.25, 0.5);
const T15_75 = tier(15, 75, 18.75, 1.5);
const HAIKU_35 = tier(0.8, 4, 1, 0.08);
const HAIKU_45 = tier(1, 5, 1.25, 0.1);
const HAIKU_55 = tier(0.1, 0.5, 0.125, 0.01);

/** The defaults: each model under the name Claude Code sends (and writes in its transcript). */
export const DEFAULT_PRICES: PriceTable = {
  'claude-opus-5-5': T4_20_R020,
  'claude-opus-5': T5_25,
  'claude-opus-4-8': T5_25,
  'claude-opus-4-7': T5_25,
  'claude-opus-4-6': T5_25,
  'claude-opus-4-5-20251101': T5_25,
  'claude-opus-4-1-20250805': T15_75,
  'claude-opus-4-20250514': T15_75,
  'claude-sonnet-5-5': T2_10_R010,
  'claude-sonnet-5': T2_10,
  'claude-sonnet-4-6': T3_15,
  'claude-sonnet-4-5-20250929': T3_15,
  'claude-sonnet-4-20250514': T3_15,
  'claude-3-7-sonnet-20250219': T3_15,
  'claude-3-5-sonnet-20241022': T3_15,
  'claude-haiku-5-5': HAIKU_55,
  'claude-haiku-4-5-20251001': HAIKU_45,
  'claude-3-5-haiku-20241022': HAIKU_35,
};

/**
 * The price of `model`: its own entry, else the entry of the same name without a date suffix
 * (`claude-sonnet-4-5` and `claude-sonnet-4-5-20250929` are one model), else undefined.
 */
export function priceOf(prices: PriceTable, model: string): ModelPrice | undefined {
  const own = prices[model];
  if (own) return own;
  const bare = model.replace(/-\d{8}$/, '');
  const dated = Object.keys(prices).find((name) => name.replace(/-\d{8}$/, '') === bare);
  return dated ? prices[dated] : undefined;
}

/** What `tokens` of `model` cost in USD, or null when the table does not price the model. */
export function costOf(prices: PriceTable, model: string, tokens: TokenCounts): number | null {
  const price = priceOf(prices, model);
  if (!price) return null;
  return TOKEN_KINDS.reduce((sum, kind) => sum + (tokens[kind] * price[kind]) / 1e6, 0);
}

const perMillion = z.number().finite().min(0).max(10_000);
const priceSchema = z
  .object({ input: perMillion, output: perMillion, cacheRead: perMillion, cacheCreation: perMillion })
  .strict();
const overridesSchema = z.record(z.string().min(1).max(200), priceSchema);

/**
 * The table with the overrides of THOPTER_PRICES or THOPTER_PRICES_FILE applied over the defaults:
 * `{"model": {"input": 5, "output": 25, "cacheRead": 0.5, "cacheCreation": 6.25}}`, USD per million
 * tokens. An Error says what is wrong with the JSON, for config.ts to name the variable.
 */
export function parsePrices(json: string): PriceTable | Error {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch (err) {
    return new Error(`is not valid JSON (${(err as Error).message})`);
  }
  const parsed = overridesSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.length ? `at ${issue.path.join('.')}: ` : '';
    return new Error(
      `${where}${issue?.message ?? 'invalid'}; write {"<model>": {"input": N, "output": N, "cacheRead": N, "cacheCreation": N}} in USD per million tokens`,
    );
  }
  return { ...DEFAULT_PRICES, ...parsed.data };
}
