import { createHash } from 'node:crypto';
import { UnrecoverableError, type Job, type Processor } from 'bullmq';
import type { Config } from '../config.js';
import { messageOf } from '../errors.js';
import type { GitHubClient } from '../github/client.js';
import type { GitHubClients } from '../github/clients.js';
import { ackMarker, renderPullRequestBody, renderStatus, replyMarker } from '../github/render.js';
import { renderReport, reportMarker } from '../github/report.js';
import type { Logger } from '../log.js';
import type { HubQueues, JobTable } from '../queues/index.js';
import { isFinal, type ThopterRecord } from '../thopters/record.js';
import type { ThopterStore } from '../thopters/store.js';
import type { TranscriptArchive } from '../transcripts/archive.js';
import { lastAgentMessage } from '../transcripts/last-message.js';

export interface GitHubProcessorDeps {
  store: ThopterStore;
  queues: HubQueues;
  github: GitHubClients;
  transcripts: TranscriptArchive;
  publicUrl: string;
  log: Logger;
  config: Pick<Config, 'repositories' | 'pullRequest'>;
}

type GitHubJob =
  JobTable['comment'] | JobTable['reply'] | JobTable['pull-request'] | JobTable['report'] | JobTable['react'];

/**
 * What the agent said last: from the transcript kept at its teardown once it has ended (the
 * machine is gone then), else as the lifecycle job last read it at a turn's end.
 */
async function agentWords(deps: GitHubProcessorDeps, record: ThopterRecord): Promise<string | undefined> {
  const kept = isFinal(record.state) ? lastAgentMessage(await deps.transcripts.load(record.id)) : undefined;
  return (kept ?? record.finish?.lastMessage)?.text;
}

/**
 * The GitHub outbox: every comment the hub writes goes through here, retried with backoff. A
 * retry after a crash looks for its own marker in the issue's comments before posting, so a
 * comment is never doubled; an edit always renders the thopter's state as it is now.
 */
export function githubProcessor(deps: GitHubProcessorDeps): Processor<GitHubJob, string> {
  return async (job: Job<GitHubJob>) => {
    try {
      if (job.name === 'report') return await postReport(deps, job.data as JobTable['report']);
      if (job.name === 'react') return await react(deps, job.data as JobTable['react']);
      if (job.name === 'pull-request')
        return await openPullRequest(deps, job.data as JobTable['pull-request']);
      return job.name === 'comment'
        ? await postStatus(deps, job.data as JobTable['comment'])
        : await postReply(deps, job.data as JobTable['reply']);
    } catch (err) {
      const status = (err as { status?: number }).status;
      // GitHub's refusals (bad token, no access, gone) do not get better by retrying.
      if (status && [400, 401, 404, 410, 422].includes(status)) {
        throw new UnrecoverableError(`GitHub answered ${status}: ${(err as Error).message}`);
      }
      throw err;
    }
  };
}

/** A GitHub thopter's record, issue and client; or why there is nothing to write to. */
async function issueOf(deps: GitHubProcessorDeps, thopterId: string) {
  const record = await deps.store.get(thopterId);
  if (!record || record.request.source !== 'github' || record.request.issue.number === undefined)
    return 'not a GitHub thopter';
  const { repository } = record.request;
  const client = deps.github.for(repository);
  if (!client) return `${repository} is not watched`;
  return { record, repository, number: record.request.issue.number, client };
}

/** Whether the hub already wrote a comment starting with `marker` on the issue (a retry's first look). */
async function wroteMarked(client: GitHubClient, repository: string, number: number, marker: string) {
  for (const c of await client.comments(repository, number)) {
    if (c.body?.startsWith(marker) && (await client.wrote(c))) return true;
  }
  return false;
}

async function postStatus(deps: GitHubProcessorDeps, data: JobTable['comment']): Promise<string> {
  const found = await issueOf(deps, data.thopterId);
  if (typeof found === 'string') return found;
  const { record, repository, number, client } = found;
  const instance = record.request.instance ?? 'body';
  const body = renderStatus(record, {
    instance,
    publicUrl: deps.publicUrl,
    queuePosition: record.state === 'queued' ? await deps.queues.queuePosition(record.id) : null,
  });
  const hash = createHash('sha256').update(body).digest('hex');
  let commentId = record.commentId;
  if (commentId === undefined) {
    const marker = ackMarker(instance);
    for (const c of await client.comments(repository, number)) {
      if (c.body?.startsWith(marker) && (await client.wrote(c))) {
        commentId = c.id;
        break;
      }
    }
    if (commentId === undefined) {
      commentId = await client.createComment(repository, number, body);
      await deps.store.setCommentId(record.id, commentId, hash);
      return 'acknowledged';
    }
  } else if (record.commentHash === hash) {
    // Nothing the issue shows has changed (a queue refresh with the same place in line).
    return 'unchanged';
  }
  await client.updateComment(repository, commentId, body);
  await deps.store.setCommentId(record.id, commentId, hash);
  return `updated: ${record.state}`;
}

async function postReply(deps: GitHubProcessorDeps, data: JobTable['reply']): Promise<string> {
  const client = deps.github.for(data.repository);
  if (!client) return `${data.repository} is not watched`;
  const marker = replyMarker(data.key);
  if (await wroteMarked(client, data.repository, data.issueNumber, marker)) return 'already replied';
  await client.createComment(data.repository, data.issueNumber, `${marker}\n${data.body}`);
  return 'replied';
}

/** A reaction needs no marker: GitHub keeps one per account and content, and answers 200 for a second. */
async function react(deps: GitHubProcessorDeps, data: JobTable['react']): Promise<string> {
  const client = deps.github.for(data.repository);
  if (!client) return `${data.repository} is not watched`;
  const on = data.commentId === undefined ? { issueNumber: data.issueNumber } : { commentId: data.commentId };
  return `reaction ${await client.react(data.repository, on, data.content)}`;
}

/**
 * A report: a new comment on the issue, once per thopter and key (its marker is looked for first,
 * so a retry after a lost response posts nothing twice). The status comment then links to it.
 */
async function postReport(deps: GitHubProcessorDeps, data: JobTable['report']): Promise<string> {
  const found = await issueOf(deps, data.thopterId);
  if (typeof found === 'string') return found;
  const { record, repository, number, client } = found;
  if (await wroteMarked(client, repository, number, reportMarker(record.id, data.key)))
    return 'already reported';
  // The pull request first, so the report links it (and the branch's figures are fresh): the same
  // idempotent step as the pull-request job. Without it the report still goes out.
  try {
    await openPullRequest(deps, { thopterId: record.id, label: data.label });
  } catch (err) {
    deps.log.warn({ thopter: record.id, err: messageOf(err) }, 'the pull request could not be looked at');
  }
  const now = (await deps.store.get(record.id)) ?? record;
  const body = renderReport(now, {
    key: data.key,
    publicUrl: deps.publicUrl,
    lastMessage: await agentWords(deps, now),
  });
  const commentId = await client.createComment(repository, number, body);
  const url = `${record.request.issue.url ?? `https://github.com/${repository}/issues/${number}`}#issuecomment-${commentId}`;
  await deps.store.setLastReport(record.id, { key: data.key, url, at: new Date().toISOString() });
  // The status comment links to the latest report.
  await deps.queues.enqueue('comment', { thopterId: record.id, label: data.label });
  return `reported: ${data.key}`;
}

/**
 * The work branch's pull request, one per work branch ever. Everything is looked up on GitHub
 * first (the default branch, the compare, an open pull request from the branch), so a retry, a
 * lost response or a second hub adopts the pull request that exists instead of making another:
 * GitHub itself refuses a second open one for the same head and base, and that refusal is taken
 * as the cue to look again.
 */
async function openPullRequest(deps: GitHubProcessorDeps, data: JobTable['pull-request']): Promise<string> {
  const { store, config } = deps;
  const record = await store.get(data.thopterId);
  const head = record?.machine?.workBranch;
  if (!record || !head) return 'no work branch';
  const { repository } = record.request;
  // A repository the GitHub App reaches needs no entry: the defaults apply.
  const settings =
    config.repositories[repository] ?? (deps.github.app && deps.github.for(repository) ? {} : undefined);
  if (!settings) return `${repository} is not in GITHUB_INTEGRATION_JSON`;
  const mode = settings.pullRequest ?? config.pullRequest;
  const coder = deps.github.coder(repository);
  const reader = coder ?? deps.github.for(repository);
  if (!reader) return `${repository} has no token in GITHUB_INTEGRATION_JSON`;

  const base = (await reader.repository(repository)).default_branch ?? 'main';
  const compare = await reader.compare(repository, base, head);
  // The agent has not pushed its branch (yet): nothing to show, nothing to open.
  if (!compare) return `${head} is not on GitHub`;
  await store.setCompare(record.id, {
    base,
    aheadBy: compare.ahead_by,
    // GitHub lists at most 300 files in a compare; past that these count those 300.
    filesChanged: compare.files.length,
    additions: compare.files.reduce((n, f) => n + f.additions, 0),
    deletions: compare.files.reduce((n, f) => n + f.deletions, 0),
    comparedAt: new Date().toISOString(),
  });
  if (record.pullRequest) return `pull request #${record.pullRequest.number} is open already`;
  if (mode === 'off') return 'pull requests are off';
  if (compare.ahead_by === 0) return `${head} has nothing ${base} lacks`;
  if (!coder) {
    // Said once (the first compare), not on every turn end.
    if (!record.compare)
      await store.addEvent(
        record.id,
        'pull-request-skipped',
        `no agentCoderPAT for ${repository} in GITHUB_INTEGRATION_JSON: add one to have pull requests opened`,
      );
    return 'no agentCoderPAT';
  }

  const adopt = async (why: string) => {
    const [open] = await coder.pullRequests(repository, head);
    if (!open) return undefined;
    await store.setPullRequest(record.id, {
      number: open.number,
      url: open.html_url,
      draft: open.draft,
      base: open.base.ref,
    });
    return `adopted pull request #${open.number} (${why})`;
  };
  const found = await adopt('found open');
  if (found) return found;
  let made;
  try {
    made = await coder.createPullRequest(repository, {
      title: record.request.issue.title,
      head,
      base,
      body: renderPullRequestBody(record, {
        publicUrl: deps.publicUrl,
        closeIssue: settings.closeIssue ?? true,
        agentMessage: await agentWords(deps, record),
      }),
      draft: mode === 'draft',
    });
  } catch (err) {
    // An earlier attempt whose answer was lost, or another hub, made it: GitHub says so with 422.
    if (alreadyExists(err)) {
      const adopted = await adopt('GitHub says it exists');
      if (adopted) return adopted;
    }
    throw err;
  }
  await store.setPullRequest(record.id, {
    number: made.number,
    url: made.html_url,
    draft: made.draft,
    base: made.base.ref,
  });
  await store.addEvent(record.id, 'pull-request', `opened ${made.html_url}`);
  deps.log.info({ thopter: record.id, issue: data.label, pullRequest: made.number }, 'pull request opened');
  return `opened pull request #${made.number}`;
}

/** GitHub's 422 for a second open pull request with the same head and base. */
function alreadyExists(err: unknown): boolean {
  const e = err as { status?: number; response?: { data?: { errors?: Array<{ message?: string }> } } };
  return (
    e.status === 422 &&
    (e.response?.data?.errors ?? []).some((x) => /pull request already exists/i.test(x.message ?? ''))
  );
}
