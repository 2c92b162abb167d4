import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { ThopterError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Prompts } from '../prompts.js';
import type { Provider } from '../providers/types.js';
import { PRIORITY, type HubQueues } from '../queues/index.js';
import type { IssueContext, Request, ThopterRecord } from '../thopters/record.js';
import type { ThopterStore } from '../thopters/store.js';

export interface IntakeDeps {
  store: ThopterStore;
  queues: HubQueues;
  prompts: Prompts;
  provider: Provider;
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

/** Where to clone from, and the folder name, for what a launch names as its repository. */
export function cloneSource(repository: string): { cloneUrl: string; repoName: string } {
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
    cloneUrl = text;
  } else if (/^[\w.-]+@[\w.-]+:[^:]/.test(text)) {
    cloneUrl = text; // scp-like ssh: git@host:owner/repo.git
  } else if (path.isAbsolute(text)) {
    if (!existsSync(text))
      throw new ThopterError('bad-input', `repository: ${text} does not exist on the hub's machine`);
    cloneUrl = text;
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
  const { cloneUrl, repoName } = input.cloneUrl
    ? { cloneUrl: input.cloneUrl, repoName: cloneSource(input.repository).repoName }
    : cloneSource(input.repository);

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
    createdAt: new Date().toISOString(),
  };
  const { created, record } = await store.create(request);
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
