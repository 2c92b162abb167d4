import { z } from 'zod';
import { MODEL_NAME } from '../usage/tokens.js';

/** The largest screen dump accepted: a 200×50 pane is 10 kB; this leaves room for wide terminals. */
export const MAX_SCREEN_BYTES = 64 * 1024;

/** Models a status post may carry usage for; an agent uses one to three. */
export const MAX_USAGE_MODELS = 20;
const tokenCount = z.number().int().min(0).max(1e13);

const isoTime = z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'must be an ISO 8601 time');

/**
 * What an observer posts to POST /api/thopters/:id/status (seed step 18). Shared by the hub, which
 * validates every field, and the observer, which builds it. Unknown fields are refused.
 */
export const statusPostSchema = z
  .object({
    thopterId: z.string().min(1).max(100),
    tmuxState: z.enum(['active', 'idle', 'stopped']),
    claudeProcess: z.enum(['running', 'notFound']),
    screenDump: z.string().max(MAX_SCREEN_BYTES),
    lastActivity: isoTime,
    spawnedAt: isoTime,
    idleSince: isoTime.optional(),
    /** How many of the agent's turns have ended (its Stop hook), and when the last did. */
    turnsEnded: z.number().int().min(0).max(1_000_000).optional(),
    lastTurnEndedAt: isoTime.optional(),
    /** When the agent last took a prompt (its UserPromptSubmit hook): a turn began. */
    lastTurnStartedAt: isoTime.optional(),
    /** The usage in the agent's transcripts since it started, by model (cumulative, not a delta). */
    usage: z
      .record(
        z.string().regex(MODEL_NAME, 'must be a model name'),
        z
          .object({
            input: tokenCount,
            output: tokenCount,
            cacheRead: tokenCount,
            cacheCreation: tokenCount,
            messages: tokenCount,
          })
          .strict(),
      )
      .refine((u) => Object.keys(u).length <= MAX_USAGE_MODELS, `at most ${MAX_USAGE_MODELS} models`)
      .optional(),
    repository: z.string().max(300).optional(),
    github: z
      .object({
        issueNumber: z.union([z.string().max(20), z.number().int()]).optional(),
        issueTitle: z.string().max(1000).optional(),
        issueUrl: z.string().max(1000).optional(),
      })
      .optional(),
  })
  .strict();

export type StatusPost = z.infer<typeof statusPostSchema>;
