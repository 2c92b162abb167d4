import type { Usage } from './tokens.js';

/** 950, 12.3k, 4.5M: what a person reads at a glance. */
export function compactTokens(n: number): string {
  if (n < 1000) return String(n);
  if (n < 1_000_000) return `${(n / 1000).toFixed(1).replace(/\.0$/, '')}k`;
  return `${(n / 1_000_000).toFixed(1).replace(/\.0$/, '')}M`;
}

/** $0.42, or four decimals for less than a cent (a short run is worth seeing as more than $0.00). */
export function formatUsd(usd: number): string {
  return usd > 0 && usd < 0.01 ? `$${usd.toFixed(4)}` : `$${usd.toFixed(2)}`;
}

/**
 * The usage in one sentence: "Used 12.3k input, 4.5k output tokens (claude-opus-5-5), about $0.42".
 * A model with no price makes the cost "unknown", never $0.
 */
export function describeUsage(usage: Usage): string {
  const t = usage.tokens;
  const parts = [`${compactTokens(t.input)} input`, `${compactTokens(t.output)} output`];
  if (t.cacheRead) parts.push(`${compactTokens(t.cacheRead)} cache read`);
  if (t.cacheCreation) parts.push(`${compactTokens(t.cacheCreation)} cache write`);
  const models = Object.keys(usage.byModel);
  const unpriced = models.filter((m) => usage.byModel[m]?.costUsd === null);
  const cost =
    usage.costUsd === null
      ? `cost unknown (no price for ${unpriced.join(', ')}: see THOPTER_PRICES)`
      : `about ${formatUsd(usage.costUsd)}`;
  return `Used ${parts.join(', ')} tokens (${models.join(', ')}), ${cost}`;
}
