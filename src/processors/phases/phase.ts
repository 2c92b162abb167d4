import type { Config } from '../../config.js';
import type { ThopterTokens } from '../../github/app.js';
import type { Logger } from '../../log.js';
import type { Provider, Transport } from '../../providers/types.js';
import type { ThopterRecord } from '../../thopters/record.js';
import type { ThopterStore } from '../../thopters/store.js';
import type { Prompts } from '../../prompts.js';
import type { PhaseName } from './names.js';

/** Everything a phase may use. A phase never sees BullMQ: it is tested with a record and a provider. */
export interface PhaseContext {
  /** The thopter's record as it stood when the phase started. */
  thopter: ThopterRecord;
  config: Config;
  provider: Provider;
  store: ThopterStore;
  prompts: Prompts;
  log: Logger;
  /** Aborted when the thopter is destroyed meanwhile or the hub hands the job over. */
  signal: AbortSignal;
  /**
   * True when this phase never started before for this thopter; false on a retry or after a
   * crash, when it must expect its own half-finished work.
   */
  firstRun: boolean;
  /** The transport onto this thopter's machine (after create-machine). One per provision. */
  transport(): Promise<Transport>;
  /** Appends a line to the machine's provisioning log (seed: /thopter/log). */
  machineLog(line: string): Promise<void>;
  /** Mints the thopter's git token when the repository is the GitHub App's. */
  thopterTokens?: ThopterTokens;
}

export interface PhaseResult {
  /** `skipped` when there was nothing to do (no golden claude, no post-checkout.sh). */
  outcome?: 'succeeded' | 'skipped';
  summary: string;
  /** Something people should know although the phase went through. */
  warning?: string;
}

export interface Phase {
  name: PhaseName;
  /** An optional phase that fails is recorded as a warning and provisioning goes on. */
  optional: boolean;
  attempts: number;
  /** First retry delay; it doubles each attempt. */
  backoffMs: number;
  run(ctx: PhaseContext): Promise<PhaseResult>;
}

const DEFAULT_GIT_IDENTITY = { userName: 'Thopter', userEmail: 'thopter@localhost' };

/** The agent's git identity: the repository's userName/userEmail from GITHUB_INTEGRATION_JSON. */
export function gitIdentity(settings: { userName?: string; userEmail?: string } | undefined) {
  return {
    userName: settings?.userName ?? DEFAULT_GIT_IDENTITY.userName,
    userEmail: settings?.userEmail ?? DEFAULT_GIT_IDENTITY.userEmail,
  };
}

/** The work branch the agent commits to: thopter/{issue}--{machineId}. */
export function workBranch(issueNumber: number | undefined, machineId: string): string {
  return `thopter/${issueNumber ?? 'task'}--${machineId}`;
}
