import { execFile } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { z } from 'zod';
import { parseTurns, type Turns } from '../../src/status/turns.js';
import { TranscriptUsageReader } from '../../src/usage/reader.js';
import type { UsageTotals } from '../../src/usage/tokens.js';
import type { ObserverConfig } from './config.js';

/** A tmux or pgrep call that takes longer than this is stuck; the next tick tries again. */
const COMMAND_TIMEOUT_MS = 5_000;
/** tmux prints the visible pane only: a few kB. Anything past this is not a pane. */
const MAX_OUTPUT_BYTES = 4 * 1024 * 1024;

/** The pane's text, or why there is none (the session or the whole tmux server is gone). */
export type Capture = { screen: string } | { gone: string };

/** What the observer reads from the machine at every tick. */
export interface Sensors {
  capture(): Promise<Capture>;
  /** Whether the agent process runs; an error (pgrep missing) counts as not running. */
  agentRunning(): Promise<boolean>;
  /** The issue's context from issue.json, once the hub has written it (seed step 15). */
  issue(): Promise<IssueContext | undefined>;
  /** The agent's ended turns, as its Stop hook marked them; undefined before the first. */
  turns?(): Promise<Turns | undefined>;
  /** The usage in the agent's transcripts so far (cumulative), read incrementally. */
  usage?(): Promise<UsageTotals>;
}

/** The fields of issue.json the status post carries. */
export interface IssueContext {
  repository?: string;
  issueNumber?: string | number;
  issueTitle?: string;
  issueUrl?: string;
}

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { env, timeout: COMMAND_TIMEOUT_MS, maxBuffer: MAX_OUTPUT_BYTES, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (!err) return resolve({ code: 0, stdout, stderr });
        const code = typeof err.code === 'number' ? err.code : -1;
        resolve({ code, stdout, stderr: stderr || err.message });
      },
    );
  });
}

/** The sensors of a real machine: tmux, pgrep and the workspace's issue.json. */
export function machineSensors(config: ObserverConfig, env: NodeJS.ProcessEnv = process.env): Sensors {
  // The observer is never inside the session it watches; a TMUX variable inherited from wherever
  // it was started would point tmux at that other server.
  const { TMUX: _inherited, ...childEnv } = env;
  const socket = config.tmuxSocket ? ['-S', config.tmuxSocket] : [];
  // `=name:` is the session called exactly `name`; a bare `-t thopter` would also match `thopter-2`.
  const target = `=${config.tmuxSession}:`;
  const issueFile = new CachedFile(config.issueFile);
  const turnsFile = new CachedFile(config.turnsFile);
  const transcripts = new TranscriptUsageReader(config.transcriptsDir);
  return {
    async capture() {
      const r = await run('tmux', [...socket, 'capture-pane', '-p', '-t', target], childEnv);
      if (r.code !== 0) return { gone: r.stderr.trim().split('\n')[0] || `tmux exited with ${r.code}` };
      // tmux pads the pane with empty rows; they carry nothing and would only be posted.
      return { screen: r.stdout.replace(/\s+$/, '') };
    },
    async agentRunning() {
      return (await run('pgrep', ['-x', config.agentProcess], childEnv)).code === 0;
    },
    async issue() {
      const raw = await issueFile.read();
      return raw === undefined ? undefined : parseIssueJson(raw);
    },
    async turns() {
      const raw = await turnsFile.read();
      return raw === undefined ? undefined : parseTurns(raw);
    },
    usage: () => transcripts.read(),
  };
}

/** What the observer needs of issue.json; the rest (body, comments) stays on the machine. */
const issueJsonSchema = z.object({
  repository: z.string().optional(),
  github: z
    .object({
      issueNumber: z.union([z.string(), z.number()]).optional(),
      issueTitle: z.string().optional(),
      issueUrl: z.string().optional(),
    })
    .optional(),
});

/** The issue fields of issue.json; undefined when it is not valid JSON of that shape. */
export function parseIssueJson(raw: string): IssueContext | undefined {
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    return undefined;
  }
  const r = issueJsonSchema.safeParse(json);
  if (!r.success) return undefined;
  return {
    repository: r.data.repository,
    issueNumber: r.data.github?.issueNumber,
    issueTitle: r.data.github?.issueTitle,
    issueUrl: r.data.github?.issueUrl,
  };
}

/**
 * A small file read again only when it changed (inode, size or mtime), or when told to forget
 * it. `read()` is undefined while the file does not exist.
 */
export class CachedFile {
  private seen?: { stamp: string; content: string };

  constructor(readonly path: string) {}

  async read(): Promise<string | undefined> {
    let stamp: string;
    try {
      const s = await stat(this.path);
      stamp = `${s.ino}:${s.size}:${s.mtimeMs}`;
    } catch {
      this.seen = undefined;
      return undefined;
    }
    if (this.seen?.stamp === stamp) return this.seen.content;
    try {
      this.seen = { stamp, content: await readFile(this.path, 'utf8') };
    } catch {
      this.seen = undefined;
      return undefined;
    }
    return this.seen.content;
  }

  /** The next read() reads the file even if it looks unchanged (a rewrite within the mtime's resolution). */
  forget() {
    this.seen = undefined;
  }
}
