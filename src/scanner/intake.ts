import { createHash, randomBytes } from 'node:crypto';
import { realpathSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Config } from '../config.js';
import { ThopterError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Prompts } from '../prompts.js';
import type { Provider, ProviderName } from '../providers/types.js';
import { PRIORITY, type HubQueues } from '../queues/index.js';
import type { Continuation, IssueContext, Request, ThopterRecord } from '../thopters/record.js';
import type { ThopterStore } from '../thopters/store.js';

export interface IntakeDeps {
  store: ThopterStore;
  queues: HubQueues;
  prompts: Prompts;
  provider: Provider;
  config: Pick<Config, 'localRepositories'>;
  log: Logger;
}

/** A launch as it arrives from the API (and, later, from an issue command), already shape-checked. */
export interface LaunchInput {
  source: 'api' | 'github';
  repository: string;
  issue: IssueContext;
  gc?: string;
  prompt?: string;
  priority?: number;
  requestedBy: string;
  /** Where to clone from when the repository is known to GitHub (its API's `clone_url`). */
  cloneUrl?: string;
  /** For a GitHub command: `body` or `comment:{id}`. */
  instance?: string;
  /**
   * Makes the launch idempotent: the same key always names the same thopter, so a retried API
   * call (or a command detected twice) adds nothing. Commands use repo + issue + instance.
   */
  dedupeKey?: string;
  /**
   * A hash of what was asked under `dedupeKey` (the API's canonical body): the same key with
   * another request is refused rather than answered with the first thopter.
   */
  requestHash?: string;
  /** `/thopter continue`: the ended thopter whose work branch the new one carries on. */
  continues?: Continuation;
}

export interface Accepted {
  record: ThopterRecord;
  /** False when the key named a thopter that already existed. */
  created: boolean;
  queuePosition: number | null;
}

export const DEFAULT_GC = 'default';
export const DEFAULT_PROMPT = 'default';

/** `thopter-` plus 12 characters; never an integer and never containing ':', as BullMQ needs. */
export function thopterIdFor(dedupeKey?: string): string {
  const tail = dedupeKey
    ? createHash('sha256').update(dedupeKey).digest('hex').slice(0, 12)
    : randomBytes(6).toString('hex');
  return `thopter-${tail}`;
}

/** Which paths on the hub's machine a launch may clone from. */
export interface LocalRepositories {
  provider: ProviderName;
  /** THOPTER_LOCAL_REPOSITORIES; empty = none. */
  roots: string[];
}

/**
 * The real path of a local repository a launch may clone, after `..` and symlinks are resolved,
 * so neither can lead out of THOPTER_LOCAL_REPOSITORIES. Anyone with the API token could
 * otherwise clone whatever the hub's user can read. A missing path and one outside get the same
 * answer: the refusal tells nothing about the hub's disk.
 */
function localRepository(given: string, local: LocalRepositories, shown = given): string {
  if (local.provider !== 'local') {
    throw new ThopterError(
      'bad-input',
      `repository: a path on the hub's machine cannot be cloned with THOPTER_PROVIDER=${local.provider}: give owner/repo or a git URL`,
    );
  }
  if (local.roots.length === 0) {
    throw new ThopterError(
      'bad-input',
      'repository: local paths are off: list the folders the hub may clone from in THOPTER_LOCAL_REPOSITORIES (e.g. /srv/git), or give owner/repo or a git URL',
    );
  }
  const real = realOrUndefined(given);
  const inside = (root: string) => {
    const r = realOrUndefined(root);
    return !!real && !!r && (real === r || real.startsWith(r.endsWith(path.sep) ? r : r + path.sep));
  };
  if (!real || !local.roots.some(inside)) {
    throw new ThopterError(
      'bad-input',
      `repository: ${shown} is not a repository under THOPTER_LOCAL_REPOSITORIES: add its folder there, or give owner/repo or a git URL`,
    );
  }
  return real;
}

/** A file:// URL's path; one naming another host (`file://server/x`) names nothing here. */
function filePath(url: URL): string {
  try {
    return fileURLToPath(url);
  } catch {
    return '';
  }
}

function realOrUndefined(p: string): string | undefined {
  try {
    return realpathSync(p);
  } catch {
    return undefined;
  }
}

/** Where to clone from, and the folder name, for what a launch names as its repository. */
export function cloneSource(
  repository: string,
  local: LocalRepositories,
): { cloneUrl: string; repoName: string } {
  const text = repository.trim();
  const folder = (p: string) => {
    const last = p.replace(/\/+$/, '').split(/[/:]/).pop() ?? '';
    return last.replace(/\.git$/, '');
  };
  let cloneUrl: string;
  if (/^(https?|ssh|git|file):\/\//.test(text)) {
    // A URL is job data, log context and part of issue.json: it must carry no secret. A user
    // name alone is allowed only for ssh (ssh://git@host/...); a token can pose as a user name.
    let url: URL;
    try {
      url = new URL(text);
    } catch {
      throw new ThopterError('bad-input', `repository: "${text}" is not a valid URL`);
    }
    if (url.password || (url.username && url.protocol !== 'ssh:') || url.search || url.hash) {
      throw new ThopterError(
        'bad-input',
        'repository: put no credentials, query or fragment in the URL; tokens belong in GITHUB_INTEGRATION_JSON',
      );
    }
    cloneUrl =
      url.protocol === 'file:' ? pathToFileURL(localRepository(filePath(url), local, text)).href : text;
  } else if (/^[\w.-]+@[\w.-]+:[^:]/.test(text)) {
    cloneUrl = text; // scp-like ssh: git@host:owner/repo.git
  } else if (path.isAbsolute(text)) {
    cloneUrl = localRepository(text, local);
  } else if (/^[\w.-]+\/[\w.-]+$/.test(text) && !text.includes('..')) {
    cloneUrl = `https://github.com/${text}.git`;
  } else {
    throw new ThopterError(
      'bad-input',
      'repository: give owner/repo, a git URL (https://, ssh://, git@host:path, file://) or an absolute path',
    );
  }
  const repoName = folder(cloneUrl);
  if (!/^[\w][\w.-]*$/.test(repoName) || repoName === '..') {
    throw new ThopterError('bad-input', `repository: cannot name a folder after "${repository}"`);
  }
  return { cloneUrl, repoName };
}

/**
 * Accepts a launch: checks what it names, writes the thopter's record, then queues its lifecycle
 * job. Both steps are idempotent, so a crash between them is mended by doing it again, and a
 * bad launch changes nothing.
 */
export async function acceptLaunch(deps: IntakeDeps, input: LaunchInput): Promise<Accepted> {
  const { store, queues, prompts, provider } = deps;

  const prompt = await prompts.resolve(input.prompt ?? DEFAULT_PROMPT);
  if (!prompt) {
    throw new ThopterError(
      'bad-input',
      `prompt: there is no prompt "${input.prompt}"; the prompts are: ${(await prompts.names()).join(', ')}`,
    );
  }
  const gc = input.gc ?? DEFAULT_GC;
  if (input.gc !== undefined && input.gc !== DEFAULT_GC) {
    const known = await provider.goldenClaudes();
    if (!known.includes(gc)) {
      throw new ThopterError(
        'bad-input',
        `gc: there is no golden claude "${gc}"; the golden claudes are: ${known.length ? known.join(', ') : '(none yet)'}`,
      );
    }
  }
  // A clone_url from GitHub is the configured GitHub's word, not the caller's: only what a
  // caller names is held to THOPTER_LOCAL_REPOSITORIES.
  const local = { provider: provider.name, roots: deps.config.localRepositories };
  const { cloneUrl, repoName } = input.cloneUrl
    ? { cloneUrl: input.cloneUrl, repoName: cloneSource(input.repository, local).repoName }
    : cloneSource(input.repository, local);

  const id = thopterIdFor(input.dedupeKey);
  const request: Request = {
    id,
    source: input.source,
    repository: input.repository.trim(),
    cloneUrl,
    repoName,
    issue: input.issue,
    gc,
    prompt,
    priority: input.priority ?? PRIORITY.launch,
    requestedBy: input.requestedBy,
    ...(input.instance ? { instance: input.instance } : {}),
    ...(input.requestHash ? { requestHash: input.requestHash } : {}),
    ...(input.continues ? { continues: input.continues } : {}),
    createdAt: new Date().toISOString(),
  };
  const { created, record } = await store.create(request);
  const firstHash = record.request.requestHash;
  if (!created && input.requestHash && firstHash && firstHash !== input.requestHash) {
    throw new ThopterError(
      'bad-input',
      `Idempotency-Key: was already used for another request (thopter ${id}); use a new key for a new launch, or resend the first request unchanged`,
    );
  }
  if (record.state === 'queued') {
    await queues.enqueue(
      'lifecycle',
      { thopterId: id, label: labelOf(record.request) },
      { priority: record.request.priority },
    );
  }
  if (created) {
    await store.addEvent(id, 'accepted', `requested by ${request.requestedBy} (${request.source})`);
    deps.log.info({ thopter: id, issue: labelOf(request), priority: request.priority }, 'request accepted');
  }
  return { record, created, queuePosition: await queues.queuePosition(id) };
}

/** `owner/repo#42`, or the repository alone for a launch with no issue. */
export function labelOf(request: Request): string {
  return request.issue.number === undefined
    ? request.repository
    : `${request.repository}#${request.issue.number}`;
}
