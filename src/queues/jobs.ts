import type { ReportKey } from '../github/report.js';
import type { PhaseName } from '../processors/phases/names.js';

/**
 * Every job the hub runs: its name, its queue and its payload. Payloads name a thopter and
 * nothing more; everything else lives on the thopter's record. So no secret, and no stale copy
 * of the request, ever sits in job data (Bull Board shows it).
 */
export interface JobTable {
  /** One thopter's whole life; holds one MAX_THOPTERS slot while active. */
  lifecycle: { thopterId: string; label: string };
  /** One provisioning phase, a child job in the thopter's flow. */
  phase: { thopterId: string; label: string; phase: PhaseName };
  /** Tear one thopter down; `save: false` skips the save of its uncommitted work (default: save). */
  destroy: { thopterId: string; label: string; reason: string; save?: boolean };
  /** One poll of every watched repository. */
  scan: { trigger: 'schedule' | 'manual' };
  /** Create or edit a GitHub thopter's status comment (the acknowledgement) to show its state now. */
  comment: { thopterId: string; label: string };
  /**
   * Open the work branch's pull request if it has commits the default branch lacks (or adopt the
   * one that is open), and record the branch's figures. Safe to add on every turn end.
   */
  'pull-request': { thopterId: string; label: string };
  /** A one-off reply on an issue (a refused command, a kill). `key` makes it be posted once. */
  reply: { repository: string; issueNumber: number; key: string; body: string; label: string };
  /** A report on the thopter's issue: a turn ended (`turn-N`), the agent exited (`exit`), it ended (`end`). */
  report: { thopterId: string; label: string; key: ReportKey };
  /**
   * Paste one told message into the thopter's session. `key` names the message on the record
   * (processors/tell.ts); its text is never in job data.
   */
  tell: { thopterId: string; label: string; key: string };
}

export type JobName = keyof JobTable;

export const QUEUE_OF = {
  lifecycle: 'thopters',
  phase: 'phases',
  destroy: 'destroy',
  scan: 'scan',
  comment: 'github',
  reply: 'github',
  report: 'github',
  'pull-request': 'github',
  // Its own queue: a message must not wait behind clones, teardowns or GitHub's rate limits.
  tell: 'tell',
} as const satisfies Record<JobName, string>;

export type QueueName = (typeof QUEUE_OF)[JobName];
export const QUEUE_NAMES = [...new Set(Object.values(QUEUE_OF))] as QueueName[];

/** Priorities: lower runs sooner; BullMQ runs an unprioritized job before every prioritized one. */
export const PRIORITY = {
  /** Default for launches. API launches may choose 1 … MAX. */
  launch: 100,
  destroy: 1,
  scan: 1,
  github: 10,
  tell: 1,
  max: 2_097_151,
} as const;

/** Job ids may not contain ':' (BullMQ's key separator) and may not be integers. */
export const lifecycleJobId = (thopterId: string) => thopterId;
export const phaseJobId = (thopterId: string, phase: PhaseName) => `${thopterId}.${phase}`;
export const destroyDedupId = (thopterId: string) => `destroy.${thopterId}`;
export const commentDedupId = (thopterId: string) => `comment.${thopterId}`;
export const pullRequestDedupId = (thopterId: string) => `pull-request.${thopterId}`;
/** One job per told message, ever: `key` is hashed (it holds ':' and '#'). */
export const tellJobId = (thopterId: string, keyHash: string) => `tell.${thopterId}.${keyHash}`;
/** The poll's job scheduler: one for every hub, so n hubs poll once. */
export const SCAN_SCHEDULER_ID = 'poll';
