import { GOLDEN_NAME } from '../providers/types.js';
import { z } from 'zod';
import { isHttpUrl } from '../config.js';
import { PRIORITY } from '../queues/jobs.js';

const comment = z
  .object({
    author: z.string().min(1).max(100),
    body: z.string().max(65_536),
    createdAt: z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'must be an ISO 8601 time'),
  })
  .strict();

/**
 * POST /api/thopters. Either an issue ({repository, issueNumber}, context from GitHub) or a task
 * given in full ({repository, title, body}); both may carry gc, prompt and priority.
 */
export const launchSchema = z
  .object({
    repository: z.string().trim().min(1, 'is required').max(500),
    issueNumber: z.number().int().positive().max(1e9).optional(),
    title: z.string().trim().min(1, 'must not be empty').max(1000).optional(),
    body: z.string().max(65_536).optional(),
    comments: z.array(comment).max(1000).optional(),
    // The dashboard renders it as the issue's link: `javascript:` there would run in the hub's origin.
    url: z
      .string()
      .max(1000)
      .refine(isHttpUrl, "must be an http(s) URL, e.g. the issue's address on GitHub")
      .optional(),
    gc: z
      .string()
      .regex(GOLDEN_NAME, 'must be a golden claude name (lower-case letters, digits, - and _; at most 30)')
      .optional(),
    prompt: z
      .string()
      .regex(
        /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}(\.md)?$/,
        'must be a prompt name from prompts/ (letters, digits, - and _)',
      )
      .optional(),
    priority: z.number().int().min(1).max(PRIORITY.max).optional(),
    /** An ended thopter whose work branch the new one carries on (as `/thopter continue`). */
    continues: z
      .string()
      .regex(/^thopter-[a-z0-9]{1,32}$/, 'must be a thopter id (they look like thopter-0123abcd4567)')
      .optional(),
  })
  .strict();

export type LaunchBody = z.infer<typeof launchSchema>;

export const listQuerySchema = z.object({
  state: z
    .string()
    .regex(
      /^(queued|provisioning|running|kept|stopping|destroyed|failed)(,(queued|provisioning|running|kept|stopping|destroyed|failed))*$/,
      'must be states separated by commas',
    )
    .optional(),
  limit: z.coerce.number().int().min(1).max(5000).optional(),
});

/** DELETE /api/thopters/:id. `save=false` discards the agent's uncommitted work instead of saving it. */
export const destroyQuerySchema = z
  .object({
    save: z
      .enum(['true', 'false'], { message: 'must be true or false (false discards the uncommitted work)' })
      .optional(),
  })
  .strict();

export const thopterIdSchema = z.string().regex(/^thopter-[a-f0-9]{12}$/, 'is not a thopter id');
