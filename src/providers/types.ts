import type { Readable, Writable } from 'node:stream';
import type { Turns } from '../status/turns.js';
import type { UsageTotals } from '../usage/tokens.js';

export type ProviderName = 'local' | 'fly';

/** Paths inside a machine. On Fly they are the seed's; the local provider maps them under DATA_DIR. */
export interface MachinePaths {
  /** The thopter user's home (seed: /data/thopter). */
  home: string;
  /** Where the agent works (seed: /data/thopter/workspace). */
  workspace: string;
  /** The provisioning log (seed: /thopter/log). */
  log: string;
  /** Written by the machine's init as its last step: wait-ready looks for it. */
  ready: string;
}

export interface ExecOptions {
  cwd?: string;
  /** Added to the machine's own environment. Never put a secret here: use a file. */
  env?: Record<string, string>;
  /** Fed to the command's stdin. */
  input?: string | Buffer | Readable;
  /** When set, stdout is streamed here instead of being collected. */
  stdout?: Writable;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** A long-running command with its streams open: the dashboard's terminal bridge. */
export interface Interactive {
  stdin: Writable;
  stdout: Readable;
  /** Resolves with the exit code (null when killed or the connection dropped). */
  done: Promise<number | null>;
  /** Ends the command: its stdin is closed and it is signalled. */
  close(): void;
}

/** Runs commands and moves files on one machine. Commands are argv arrays: no shell parses them. */
export interface Transport {
  readonly paths: MachinePaths;
  /** False once the connection behind it is gone: the pool then opens a new one. */
  readonly isOpen: boolean;
  exec(argv: string[], opts?: ExecOptions): Promise<ExecResult>;
  /** Starts a command and hands over its stdin and stdout (no terminal is allocated). */
  open(argv: string[]): Promise<Interactive>;
  writeFile(path: string, data: string | Buffer, mode?: number): Promise<void>;
  appendFile(path: string, data: string): Promise<void>;
  exists(path: string): Promise<boolean>;
  readFile(path: string): Promise<Buffer>;
  close(): Promise<void>;
}

/** What a new machine needs from the hub. */
export interface MachineSpec {
  /** Chosen by the hub before the provider is asked, so that creation is idempotent. */
  id: string;
  thopterId: string;
  /** The thopter's own token for its status posts; delivered as a file only its user can read. */
  statusToken: string;
  requestId: string;
  /** `owner/repo`, and the issue when there is one: names and labels the machine. */
  repository: string;
  issueNumber?: number;
  git: { userName: string; userEmail: string };
  /** True when an earlier attempt may have asked for this machine already (a retry, a crash). */
  resume?: boolean;
  /** Optional files from the operator (seed: /tmp/.env.thopters and /tmp/post-checkout.sh). */
  envFile?: string;
  postCheckoutScript?: string;
}

export interface MachineInfo {
  /** The hub's id for the machine (MachineSpec.id). */
  id: string;
  thopterId: string;
  createdAt: string;
  /** The provider's own id and name when they differ from the hub's (a Fly machine id). */
  providerId?: string;
  name?: string;
}

/**
 * What {@link Provider.keepUp} found of a running thopter's machine: it runs (or is on its way up);
 * it had stopped and was started again; or it is down for good. `reason` is for the thopter's events.
 */
export type MachineUpkeep =
  { kind: 'running' } | { kind: 'restarted'; reason: string } | { kind: 'down'; reason: string };

/** What the hub saw in a thopter's terminal session. */
export interface SessionSnapshot {
  screen: string;
  agentRunning: boolean;
  /** False when the terminal session itself is gone. */
  sessionAlive: boolean;
  /** The agent's ended turns, when the provider reads them with the session (local). */
  turns?: Turns;
  /** The usage in the agent's transcripts so far, when the provider reads it with the session (local). */
  usage?: UsageTotals;
}

export interface GoldenClaude {
  name: string;
  /** A transport onto the golden claude, and the home to copy from. */
  transport: Transport;
  /** Why its home should not be copied now (Claude is running on it), or undefined. */
  busy(): Promise<string | undefined>;
}

export interface GoldenClaudeInfo {
  name: string;
  /** `ready`, or the provider's word for where it stands (a Fly machine state). */
  state: string;
  /** Where an operator logs it in: a folder (local) or a machine (fly). */
  location: string;
}

/** Where machines come from. Phases talk to this and to Transport, never to a provider's API. */
export interface Provider {
  readonly name: ProviderName;
  /**
   * True when the hub reads the session itself (local); false when an observer inside the
   * machine posts its status (fly).
   */
  readonly hubObserves: boolean;
  /** Called once by the hub before anything else. */
  start?(): Promise<void>;
  /** Creates the machine, or finds the one already created for `spec.id`. */
  create(spec: MachineSpec, signal?: AbortSignal): Promise<MachineInfo>;
  get(id: string): Promise<MachineInfo | null>;
  /** Every machine this hub's provider created, live or half-made. */
  list(): Promise<MachineInfo[]>;
  /**
   * True once the machine is up and reachable (a Fly machine started). Whether its init has
   * finished is checked over the transport, by wait-ready. Throws when it can never come up.
   */
  ready(id: string, signal?: AbortSignal): Promise<boolean>;
  /**
   * Keeps a running thopter's machine up. A machine can stop and still exist (its process crashed
   * or ran out of memory past the provider's own restarts, or an operator stopped it), and `get`
   * then still finds it. The lifecycle check calls this after `get`: a stopped machine is started
   * again, a bounded number of times, or reported down with the reason, and the thopter ends.
   * Absent when the provider's machines cannot stop on their own.
   */
  keepUp?(id: string): Promise<MachineUpkeep>;
  /** Idempotent: destroying a machine that is gone succeeds. */
  destroy(id: string): Promise<void>;
  transport(id: string): Promise<Transport>;
  /** Reads the terminal session, over `via` when the caller has a transport open already. */
  snapshot(id: string, via?: Transport): Promise<SessionSnapshot>;
  /**
   * The usage in the machine's transcripts so far, for a provider whose hub reads them itself
   * (local); absent where the machine's observer posts it (Fly).
   */
  usage?(id: string): Promise<UsageTotals>;
  /** Names of the golden claudes that exist. */
  goldenClaudes(): Promise<string[]>;
  goldenClaude(name: string): Promise<GoldenClaude | null>;
  listGoldenClaudes(): Promise<GoldenClaudeInfo[]>;
  /** Makes an empty golden claude for an operator to log in to (seed: recreate-gc.sh). */
  createGoldenClaude(name: string): Promise<GoldenClaudeInfo>;
  /** Idempotent: false when there was none. */
  destroyGoldenClaude(name: string): Promise<boolean>;
  close(): Promise<void>;
}

/** The seed's tmux session name inside every thopter. */
export const SESSION = 'thopter';

/** Golden claude names: what `--gc` and the API accept. */
export const GOLDEN_NAME = /^[a-z0-9][a-z0-9_-]{0,29}$/;
