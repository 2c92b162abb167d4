import type { PhaseName } from '../processors/phases/names.js';
import type { Turns } from '../status/turns.js';

/**
 * Where a thopter stands. `destroyed` and `failed` are final. `kept`: provisioning failed and the
 * operator asked to keep such machines (THOPTER_KEEP_FAILED); it ends `failed` once killed or timed out.
 */
export type ThopterState =
  'queued' | 'provisioning' | 'running' | 'kept' | 'stopping' | 'destroyed' | 'failed';
export const FINAL_STATES: readonly ThopterState[] = ['destroyed', 'failed'];
export const isFinal = (s: ThopterState) => FINAL_STATES.includes(s);

export interface IssueComment {
  author: string;
  body: string;
  createdAt: string;
  updatedAt?: string;
}

/** The seed's GitHub context. `number` is absent for an API launch that names no issue. */
export interface IssueContext {
  number?: number;
  title: string;
  body: string;
  url?: string;
  author?: string;
  mentionAuthor?: string;
  comments: IssueComment[];
}

/** A command or API launch accepted for action. Holds no secret: Bull Board and logs may show it. */
export interface Request {
  id: string;
  source: 'api' | 'github';
  /** `owner/repo` for a GitHub repository, else the git URL or path as given. */
  repository: string;
  /** What `git clone` is given: a URL or a local path. Never carries a token. */
  cloneUrl: string;
  /** The clone's folder name in the workspace. */
  repoName: string;
  issue: IssueContext;
  /** Golden claude name (seed: `--gc`, default `default`). */
  gc: string;
  /** Prompt template name in prompts/ (seed: `--prompt`, default `default`). */
  prompt: string;
  /** Lower runs sooner. */
  priority: number;
  /** Who asked: a GitHub login, or `api`. */
  requestedBy: string;
  /** For a GitHub command: where it stands, `body` or `comment:{id}`. */
  instance?: string;
  /** For an API launch with an Idempotency-Key: a hash of its canonical body. */
  requestHash?: string;
  /** For `/thopter continue`: the ended thopter whose work branch this one carries on. */
  continues?: Continuation;
  createdAt: string;
}

/** What a continuing thopter picks up: the ended thopter, its work branch, and what was asked. */
export interface Continuation {
  thopterId: string;
  workBranch: string;
  /** When the continued thopter started: the issue's comments after it are new to the agent. */
  since: string;
  /** The text of the `continue` command, when it had some. */
  text?: string;
}

export interface MachineRecord {
  id: string;
  provider: 'local' | 'fly';
  workBranch: string;
  /** `creating` is written before the provider is asked, so a resumed job finds its machine. */
  state: 'creating' | 'created';
  /** The provider's own id and name for it (a Fly machine's), once created. */
  providerId?: string;
  name?: string;
  createdAt: string;
}

export type PhaseOutcome = 'running' | 'retrying' | 'succeeded' | 'skipped' | 'warning' | 'failed';

export interface PhaseRecord {
  outcome: PhaseOutcome;
  attempts: number;
  startedAt: string;
  endedAt?: string;
  /** What happened, for people: "cloned owner/repo into workspace/repo". */
  summary?: string;
  /** For `warning`, `retrying` and `failed`. */
  error?: string;
}

export interface SessionStatus {
  /** `unknown`: the thopter's observer stopped posting; the hub looks at the session itself. */
  state: 'active' | 'idle' | 'stopped' | 'unknown';
  agentRunning: boolean;
  lastActivity: string;
  idleSince?: string;
  screen: string;
  updatedAt: string;
  /** `hub` when the hub observed the session itself (local provider), `observer` for status posts. */
  source: 'hub' | 'observer';
  /** For `unknown`: when the observer last posted (or the thopter started running, if it never did). */
  silentSince?: string;
  /** The agent's ended turns, as its Stop hook counted them (absent when the agent has no such hook). */
  turns?: Turns;
}

/** What the lifecycle job has seen of the agent's work and acted on, once each. */
export interface FinishState {
  /** Turns already reported (the report of turn n is queued once `reported` reaches n). */
  reported: number;
  /** When the agent process was first seen gone while the thopter ran. */
  agentExitedAt?: string;
  /** The agent's last message, from its transcript, trimmed. */
  lastMessage?: { text: string; at?: string };
}

/** What a destroy request asks for. `save: false` (`/thopter kill --discard`, `?save=false`) skips the save. */
export interface DestroyRequest {
  reason: string;
  at: string;
  save?: boolean;
}

/**
 * What the save before a teardown did: the commit it made of the agent's uncommitted work (if
 * any) and its files, whether the work branch went to origin, or why not (`error`).
 */
export interface SaveOutcome {
  at: string;
  commit?: string;
  files: string[];
  pushed: boolean;
  error?: string;
}

/** The event's words for a save: what it committed and pushed, or why not. */
export function describeSave(s: SaveOutcome, workBranch: string): string {
  const files =
    s.files.length > 10
      ? `${s.files.slice(0, 10).join(', ')} and ${s.files.length - 10} more`
      : s.files.join(', ');
  const committed = s.commit
    ? `committed ${s.commit.slice(0, 12)} (${s.files.length} file${s.files.length === 1 ? '' : 's'}: ${files})`
    : '';
  if (s.error) return committed ? `${committed}; ${s.error}` : `not saved: ${s.error}`;
  if (s.pushed) return `${committed ? `${committed} and pushed` : 'pushed'} ${workBranch} to origin`;
  return committed
    ? `${committed}; origin had it already`
    : `nothing to save: ${workBranch} is clean and on origin`;
}

export interface ThopterEvent {
  at: string;
  type: string;
  message: string;
}

/** The work branch's pull request (one per work branch, ever). */
export interface PullRequestRecord {
  number: number;
  url: string;
  draft: boolean;
  /** The branch it merges into: the repository's default branch. */
  base: string;
}

/** What the work branch has that the default branch lacks, as GitHub's compare API counted it. */
export interface BranchCompare {
  base: string;
  /** Commits on the work branch that the base lacks. */
  aheadBy: number;
  filesChanged: number;
  additions: number;
  deletions: number;
  comparedAt: string;
}

/**
 * A message for a live thopter's agent (`/thopter tell`, a review asking for changes, a budget
 * warning), recorded once per `key` and delivered once by a `tell` job (processors/tell.ts).
 * `delivering`: the paste has begun; a retry never pastes again (see there), so a message that
 * stays `delivering` may or may not have arrived.
 */
export interface ToldMessage {
  /** What makes it be told once: the command (`github:owner/repo#42@comment:123`), `budget-90`. */
  key: string;
  text: string;
  /** The GitHub login of who said it; absent when the hub itself says it (a budget warning). */
  from?: string;
  /** Where it was written (the comment's URL): the report that answers it links there. */
  url?: string;
  at: string;
  state: 'queued' | 'delivering' | 'delivered' | 'undelivered';
  deliveredAt?: string;
  /** For `undelivered`: why, for people. */
  reason?: string;
  /** The report that answers it (`turn-N`), once the lifecycle job queued it. */
  answeredIn?: string;
}

export interface ThopterRecord {
  id: string;
  state: ThopterState;
  request: Request;
  machine?: MachineRecord;
  phases: Partial<Record<PhaseName, PhaseRecord>>;
  session?: SessionStatus;
  destroyRequested?: DestroyRequest;
  /** The save before its teardown, once it ran (or was skipped, with why in `error`). */
  saved?: SaveOutcome;
  /** The agent's turns that ended, each also an event `turn-ended`: what the finish line acts on. */
  turns?: Turns;
  /** The finish line's progress: what the hub has reported of the agent (see processors/finish.ts). */
  finish?: FinishState;
  /** The latest report comment on the issue. */
  lastReport?: { key: string; url: string; at: string };
  /** For `kept`: what failed, and until when the machine is kept. */
  kept?: { reason: string; until: string };
  /** The GitHub comment that acknowledged the command and shows the thopter's state. */
  commentId?: number;
  /** sha256 of the comment body last written, so an edit that changes nothing is not sent. */
  commentHash?: string;
  pullRequest?: PullRequestRecord;
  /** The work branch against the default branch, as of the last pull-request job. */
  compare?: BranchCompare;
  /** Messages told to its agent, oldest first (processors/tell.ts). */
  told?: ToldMessage[];
  /** Why it ended (destroyed) or what failed (failed). */
  endReason?: string;
  createdAt: string;
  startedAt?: string;
  runningAt?: string;
  endedAt?: string;
  updatedAt: string;
}
