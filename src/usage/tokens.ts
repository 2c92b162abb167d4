/** The kinds of tokens a message's usage counts, in the order they are shown. */
export const TOKEN_KINDS = ['input', 'output', 'cacheRead', 'cacheCreation'] as const;
export type TokenKind = (typeof TOKEN_KINDS)[number];
export type TokenCounts = Record<TokenKind, number>;

/** What a model name may hold: it becomes a Redis hash field and a Prometheus label, tab-separated. */
export const MODEL_NAME = /^[\w.:@[\]-]{1,200}$/;

export const noTokens = (): TokenCounts => ({ input: 0, output: 0, cacheRead: 0, cacheCreation: 0 });

/** What one model did for a thopter so far: its tokens and how many messages (API responses). */
export interface ModelTokens extends TokenCounts {
  messages: number;
}

/**
 * A thopter's usage as counted from its transcripts: model name → cumulative tokens. Always the
 * whole count since the agent started, never a delta, so writing it twice changes nothing.
 */
export type UsageTotals = Record<string, ModelTokens>;

/** The thopter's usage as recorded (`record.usage`). */
export interface Usage {
  tokens: TokenCounts;
  byModel: Record<string, { tokens: TokenCounts; messages: number; costUsd: number | null }>;
  /** Cumulative estimated USD for the thopter; null when a model it used has no known price. */
  costUsd: number | null;
  messages: number;
  updatedAt: string;
}
