import { z } from 'zod';

/** The largest screen dump accepted: a 200×50 pane is 10 kB; this leaves room for wide terminals. */
export const MAX_SCREEN_BYTES = 64 * 1024;

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
