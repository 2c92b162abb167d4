import type { GitHubComment } from '../github/schemas.js';
import type { Prompts } from '../prompts.js';
import { waitsByMarks } from '../status/turns.js';
import { isFinal, type Continuation, type ThopterRecord } from '../thopters/record.js';

/** The prompt a continuing thopter gets (prompts/continue.md), unless PROMPTS_DIR has none. */
export const CONTINUE_PROMPT = 'continue';

/** The prompts a launch may name: the continue prompt needs an ended thopter to carry on. */
export async function launchPrompts(prompts: Prompts): Promise<string[]> {
  return (await prompts.names()).filter((n) => n !== CONTINUE_PROMPT);
}

/** What a `/thopter continue` finds on its issue. */
export type ContinueTarget =
  | { kind: 'live'; thopter: ThopterRecord }
  | { kind: 'ended'; thopter: ThopterRecord }
  /** Nothing to continue; `why` says so in words for the reply. */
  | { kind: 'none'; why: string };

/**
 * Which thopter of an issue a `continue` acts on. `--id` names one of the issue's thopters; by
 * default a live thopter comes first (a second agent on the same branch would fight the first),
 * then the newest ended one that had a machine and so a work branch. `thopters` come newest first.
 */
export function continueTarget(
  thopters: ThopterRecord[],
  repository: string,
  issueNumber: number,
  id?: string,
): ContinueTarget {
  const mine = thopters.filter(
    (t) => t.request.repository === repository && t.request.issue.number === issueNumber,
  );
  const hasBranch = (t: ThopterRecord) => isFinal(t.state) && !!t.machine?.workBranch;
  if (id !== undefined) {
    const named = mine.find((t) => t.id === id);
    if (!named) return { kind: 'none', why: `there is no thopter \`${id}\` on this issue` };
    if (!isFinal(named.state)) return { kind: 'live', thopter: named };
    if (!hasBranch(named))
      return {
        kind: 'none',
        why: `\`${id}\` ended before it had a machine, so it has no work branch to continue`,
      };
    // Already carried on by a live thopter: a second agent on that branch would fight it.
    const branch = named.machine!.workBranch;
    const onIt = mine.find(
      (t) =>
        !isFinal(t.state) && (t.machine?.workBranch === branch || t.request.continues?.workBranch === branch),
    );
    if (onIt) return { kind: 'live', thopter: onIt };
    return { kind: 'ended', thopter: named };
  }
  const live = mine.find((t) => !isFinal(t.state));
  if (live) return { kind: 'live', thopter: live };
  const ended = mine.find(hasBranch);
  if (ended) return { kind: 'ended', thopter: ended };
  return {
    kind: 'none',
    why: mine.length
      ? 'no thopter of this issue got as far as a machine and a work branch'
      : 'no thopter has run on this issue, or none since THOPTER_RETENTION (the hub forgets thopters that ended longer ago)',
  };
}

/**
 * Without prompt marks (an observer older than them), a turn's end is drawn on the screen just
 * after the Stop hook marks it: a screen that last changed this soon after the turn ended still
 * shows an agent waiting for input. Only a fallback: Claude Code 2.1 draws notices in its footer
 * for some 20 s after a turn ends.
 */
const TURN_END_DRAWN_MS = 10_000;

/**
 * Whether a live thopter's agent is waiting for input: its last turn ended after it last took a
 * prompt (the hooks mark both), or its session went idle (a turn interrupted with Esc runs no Stop
 * hook). Text for an agent at work would land mid-turn, so `continue` tells only a waiting one.
 */
export function agentWaits(t: ThopterRecord): boolean {
  const { session } = t;
  if (t.state !== 'running' || t.destroyRequested || !session?.agentRunning) return false;
  if (session.state === 'idle') return true;
  const turns = session.turns ?? t.turns;
  const byMarks = waitsByMarks(turns);
  if (byMarks !== undefined) return byMarks;
  const ended = turns?.lastEndedAt;
  return !!ended && Date.parse(session.lastActivity) <= Date.parse(ended) + TURN_END_DRAWN_MS;
}

/** What the new thopter carries on: the ended one's branch, and the comments since it started. */
export function continuationOf(ended: ThopterRecord, text?: string): Continuation {
  return {
    thopterId: ended.id,
    workBranch: ended.machine!.workBranch,
    since: ended.startedAt ?? ended.createdAt,
    ...(text ? { text } : {}),
  };
}

/**
 * The thread as the continuing agent reads it: without the hub's acknowledgements and replies
 * (status and bookkeeping, not conversation), but with its reports, which quote what the agent
 * said it did. Only the hub's own comments are left out: anyone may copy a marker.
 */
export async function threadForAgent(
  comments: GitHubComment[],
  wrote: (c: GitHubComment) => Promise<boolean>,
): Promise<GitHubComment[]> {
  const kept: GitHubComment[] = [];
  for (const c of comments) {
    const body = c.body ?? '';
    const bookkeeping = body.startsWith('<!-- thopter-ack:') || body.startsWith('<!-- thopter-reply:');
    if (bookkeeping && (await wrote(c))) continue;
    kept.push(c);
  }
  return kept;
}
