import { nextActivity, type Activity } from '../../src/status/activity.js';
import {
  MAX_SCREEN_BYTES,
  MAX_USAGE_MODELS,
  statusPostSchema,
  type StatusPost,
} from '../../src/status/schema.js';
import type { UsageTotals } from '../../src/usage/tokens.js';
import type { IssueContext, Sensors } from './machine.js';

export interface ObserveDeps {
  sensors: Sensors;
  thopterId: string;
  /** When this observer started: the seed's `spawnedAt`. */
  spawnedAt: string;
  idleAfterMs: number;
  now?: () => Date;
}

export interface Observation {
  /** The status to post, already checked against the hub's own schema. */
  post: StatusPost;
  /** What the next observation compares with. */
  activity: Activity | undefined;
  /** Why the session counts as stopped (tmux's message), when it does. */
  gone?: string;
  /** Set when issue.json's fields did not fit the schema and were left out. */
  issueProblem?: string;
}

/**
 * One look at the machine (seed step 18): the pane compared with the last look (active, or idle
 * once unchanged for idleAfterMs), whether the agent process runs, and the issue's context.
 * A session that is gone is `stopped`, showing the last screen seen: what the user needs to know
 * is that the agent's terminal ended, and what it said last.
 */
export async function observeOnce(deps: ObserveDeps, previous: Activity | undefined): Promise<Observation> {
  const [capture, running, issue, turns, usage] = await Promise.all([
    deps.sensors.capture(),
    deps.sensors.agentRunning(),
    deps.sensors.issue(),
    deps.sensors.turns?.(),
    // A transcript that cannot be read costs the post its usage, not the post itself.
    deps.sensors.usage?.().catch(() => undefined),
  ]);
  const now = (deps.now ?? (() => new Date()))();
  const base = {
    thopterId: deps.thopterId,
    claudeProcess: running ? ('running' as const) : ('notFound' as const),
    spawnedAt: deps.spawnedAt,
    ...(turns?.count ? { turnsEnded: turns.count, lastTurnEndedAt: turns.lastEndedAt } : {}),
    ...(turns?.lastStartedAt ? { lastTurnStartedAt: turns.lastStartedAt } : {}),
    ...(usage && Object.keys(usage).length ? { usage: limitModels(usage) } : {}),
  };
  if ('gone' in capture) {
    // The activity is kept: if the session comes back showing the same screen, nothing happened.
    const post = {
      ...base,
      tmuxState: 'stopped' as const,
      screenDump: previous?.screen ?? '',
      lastActivity: previous?.lastActivity ?? deps.spawnedAt,
    };
    return { ...withIssue(post, issue), activity: previous, gone: capture.gone };
  }
  const activity = nextActivity(previous, truncateScreen(capture.screen), now, deps.idleAfterMs);
  const post = {
    ...base,
    tmuxState: activity.state,
    screenDump: activity.screen,
    lastActivity: activity.lastActivity,
    ...(activity.state === 'idle' && activity.idleSince ? { idleSince: activity.idleSince } : {}),
  };
  const { state: _state, ...kept } = activity;
  return { ...withIssue(post, issue), activity: kept };
}

/** The final status sent on SIGTERM: the last observation, marked stopped. */
export function stoppedPost(last: StatusPost): StatusPost {
  const { idleSince: _idleSince, ...rest } = last;
  return { ...rest, tmuxState: 'stopped' };
}

/**
 * Adds issue.json's repository and GitHub fields, and checks the whole post against the hub's
 * schema. Fields that would make the hub refuse every post (a title over its limit, a foreign
 * issue.json) are left out rather than sent: the session status matters more than its labels.
 */
function withIssue(
  post: Omit<StatusPost, 'repository' | 'github'>,
  issue: IssueContext | undefined,
): { post: StatusPost; issueProblem?: string } {
  const github = {
    ...(issue?.issueNumber !== undefined && issue.issueNumber !== ''
      ? { issueNumber: issue.issueNumber }
      : {}),
    ...(issue?.issueTitle ? { issueTitle: shorten(issue.issueTitle, 1000) } : {}),
    ...(issue?.issueUrl ? { issueUrl: issue.issueUrl } : {}),
  };
  const full = statusPostSchema.safeParse({
    ...post,
    ...(issue?.repository ? { repository: issue.repository } : {}),
    ...(Object.keys(github).length ? { github } : {}),
  });
  if (full.success) return { post: full.data };
  const bare = statusPostSchema.safeParse(post);
  // Everything in `post` comes from this program, not from outside: a failure here is a bug.
  if (!bare.success) throw new Error(`status does not fit the hub's schema: ${bare.error.message}`);
  const where = full.error.issues[0]?.path.join('.') ?? '';
  return { post: bare.data, issueProblem: `${where}: ${full.error.issues[0]?.message ?? 'invalid'}` };
}

/** The hub takes at most MAX_USAGE_MODELS models in a post: those with the most messages. */
function limitModels(usage: UsageTotals): UsageTotals {
  const models = Object.entries(usage);
  if (models.length <= MAX_USAGE_MODELS) return usage;
  return Object.fromEntries(
    models.sort(([, a], [, b]) => b.messages - a.messages).slice(0, MAX_USAGE_MODELS),
  );
}

function shorten(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max - 1)}…`;
}

/**
 * The bottom of the screen that fits in `maxBytes` of UTF-8 (the hub refuses more): whole lines
 * from the bottom up, the agent's latest output being what matters. A single line longer than
 * the limit keeps its end.
 */
export function truncateScreen(screen: string, maxBytes = MAX_SCREEN_BYTES): string {
  // A string of n UTF-16 units is at most 3n bytes: most screens need no encoding at all.
  if (screen.length * 3 <= maxBytes) return screen;
  const bytes = Buffer.from(screen, 'utf8');
  if (bytes.length <= maxBytes) return screen;
  let start = bytes.length - maxBytes;
  const newline = bytes.indexOf(0x0a, start - 1);
  if (newline >= 0 && newline < bytes.length - 1) {
    start = newline + 1;
  } else {
    // No line break to cut at: start at the next whole character (skip UTF-8 continuation bytes).
    while (start < bytes.length && (bytes[start]! & 0xc0) === 0x80) start++;
  }
  return bytes.subarray(start).toString('utf8');
}
