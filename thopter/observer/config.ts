import { z } from 'zod';
import { TURNS_FILE } from '../../src/status/turns.js';

/**
 * What the observer is told through its environment. The hub's machine contract sets THOPTER_ID and
 * HUB_STATUS_URL (thopter/README.md); everything else has the seed's default and exists so tests
 * and benchmarks can run it fast, against their own tmux server and files.
 */
export interface ObserverConfig {
  /** THOPTER_ID: the thopter this machine is. Required. */
  thopterId: string;
  /** HUB_STATUS_URL: the full status endpoint, `.../api/thopters/{id}/status`. Required. */
  statusUrl: string;
  /** OBSERVER_INTERVAL_MS: how often the pane is captured and a status posted. Default 3000 (seed). */
  intervalMs: number;
  /** OBSERVER_IDLE_AFTER_MS: an unchanged pane for this long is idle. Default 60000 (seed). */
  idleAfterMs: number;
  /** OBSERVER_TOKEN_FILE: the status token. Default /data/thopter/.thopter/status-token. */
  tokenFile: string;
  /** OBSERVER_ISSUE_FILE: the issue's structured context. Default /data/thopter/workspace/issue.json. */
  issueFile: string;
  /** OBSERVER_TURNS_FILE: where the agent's Stop hook marks its ended turns. Default /data/thopter/.thopter/turns.log. */
  turnsFile: string;
  /** OBSERVER_TRANSCRIPTS_DIR: Claude Code's transcripts, for usage. Default /data/thopter/.claude/projects. */
  transcriptsDir: string;
  /** OBSERVER_TMUX_SESSION: the session whose pane is watched. Default `thopter`. */
  tmuxSession: string;
  /**
   * OBSERVER_TMUX_SOCKET: a tmux server socket (`tmux -S`). Default: none, so tmux finds the
   * user's own server, under TMUX_TMPDIR when that is set.
   */
  tmuxSocket?: string;
  /** OBSERVER_AGENT_PROCESS: the agent's process name, for `pgrep -x`. Default `claude`. */
  agentProcess: string;
  /** OBSERVER_BACKOFF_MAX_MS: the longest wait between posts while the hub is away or failing. Default 60000. */
  backoffMaxMs: number;
  /** OBSERVER_SLOW_RETRY_MS: how often a post the hub refused (a 401 token, another 4xx) is retried. Default 30000. */
  slowRetryMs: number;
  /** OBSERVER_POST_TIMEOUT_MS: a post not answered in this time counts as the hub being away. Default 10000. */
  postTimeoutMs: number;
  /**
   * OBSERVER_STOP_TIMEOUT_MS: how long the final `stopped` post may take after SIGTERM. Default
   * 1500, inside pm2's default kill_timeout (1600 ms) so the post is not cut off by SIGKILL.
   */
  stopTimeoutMs: number;
}

const ms = (name: string, fallback: number, min = 1) =>
  z
    .string()
    .optional()
    .transform((raw, ctx) => {
      if (raw === undefined || raw.trim() === '') return fallback;
      const n = Number(raw);
      if (!Number.isInteger(n) || n < min) {
        ctx.addIssue({
          code: 'custom',
          message: `${name} is "${raw}": write a whole number of milliseconds, at least ${min} (default ${fallback})`,
        });
        return z.NEVER;
      }
      return n;
    });

const text = (fallback: string) =>
  z
    .string()
    .optional()
    .transform((raw) => (raw === undefined || raw.trim() === '' ? fallback : raw.trim()));

const schema = z.object({
  THOPTER_ID: z
    .string({ error: 'THOPTER_ID is missing: the hub sets it on every thopter machine' })
    .trim()
    .min(1, 'THOPTER_ID is empty: the hub sets it on every thopter machine')
    .max(100, 'THOPTER_ID is over 100 characters: it is not a thopter id'),
  HUB_STATUS_URL: z
    .string({ error: 'HUB_STATUS_URL is missing: set it to the full status endpoint of the hub' })
    .trim()
    .refine((s) => /^https?:$/.test(safeUrl(s)?.protocol ?? ''), {
      message: 'HUB_STATUS_URL is not an http(s) URL: give the full status endpoint of the hub',
    }),
  OBSERVER_INTERVAL_MS: ms('OBSERVER_INTERVAL_MS', 3000, 10),
  OBSERVER_IDLE_AFTER_MS: ms('OBSERVER_IDLE_AFTER_MS', 60_000),
  OBSERVER_TOKEN_FILE: text('/data/thopter/.thopter/status-token'),
  OBSERVER_ISSUE_FILE: text('/data/thopter/workspace/issue.json'),
  OBSERVER_TURNS_FILE: text(`/data/thopter/${TURNS_FILE}`),
  OBSERVER_TRANSCRIPTS_DIR: text('/data/thopter/.claude/projects'),
  OBSERVER_TMUX_SESSION: text('thopter').refine((s) => /^[\w-]+$/.test(s), {
    message: 'OBSERVER_TMUX_SESSION must be a plain session name (letters, digits, - and _)',
  }),
  OBSERVER_TMUX_SOCKET: z
    .string()
    .optional()
    .transform((s) => (s?.trim() ? s.trim() : undefined)),
  // pgrep -x compares with the kernel's process name, which is cut at 15 characters.
  OBSERVER_AGENT_PROCESS: text('claude').refine((s) => s.length <= 15 && !/\s/.test(s), {
    message: 'OBSERVER_AGENT_PROCESS must be a process name of at most 15 characters (pgrep -x)',
  }),
  OBSERVER_BACKOFF_MAX_MS: ms('OBSERVER_BACKOFF_MAX_MS', 60_000),
  OBSERVER_SLOW_RETRY_MS: ms('OBSERVER_SLOW_RETRY_MS', 30_000),
  OBSERVER_POST_TIMEOUT_MS: ms('OBSERVER_POST_TIMEOUT_MS', 10_000),
  OBSERVER_STOP_TIMEOUT_MS: ms('OBSERVER_STOP_TIMEOUT_MS', 1500),
});

function safeUrl(s: string): URL | undefined {
  try {
    return new URL(s);
  } catch {
    return undefined;
  }
}

/** Reads the observer's settings; throws an Error naming every variable that is wrong and the fix. */
export function loadObserverConfig(env: Record<string, string | undefined>): ObserverConfig {
  const r = schema.safeParse(env);
  if (!r.success) throw new Error(r.error.issues.map((i) => i.message).join('; '));
  const c = r.data;
  return {
    thopterId: c.THOPTER_ID,
    statusUrl: c.HUB_STATUS_URL,
    intervalMs: c.OBSERVER_INTERVAL_MS,
    idleAfterMs: c.OBSERVER_IDLE_AFTER_MS,
    tokenFile: c.OBSERVER_TOKEN_FILE,
    issueFile: c.OBSERVER_ISSUE_FILE,
    turnsFile: c.OBSERVER_TURNS_FILE,
    transcriptsDir: c.OBSERVER_TRANSCRIPTS_DIR,
    tmuxSession: c.OBSERVER_TMUX_SESSION,
    tmuxSocket: c.OBSERVER_TMUX_SOCKET,
    agentProcess: c.OBSERVER_AGENT_PROCESS,
    backoffMaxMs: c.OBSERVER_BACKOFF_MAX_MS,
    slowRetryMs: c.OBSERVER_SLOW_RETRY_MS,
    postTimeoutMs: c.OBSERVER_POST_TIMEOUT_MS,
    stopTimeoutMs: c.OBSERVER_STOP_TIMEOUT_MS,
  };
}
