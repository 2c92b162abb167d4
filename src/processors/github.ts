import { createHash } from 'node:crypto';
import { UnrecoverableError, type Job, type Processor } from 'bullmq';
import type { GitHubClients } from '../github/clients.js';
import { ackMarker, renderStatus, replyMarker } from '../github/render.js';
import { renderReport, reportMarker } from '../github/report.js';
import type { Logger } from '../log.js';
import type { HubQueues, JobTable } from '../queues/index.js';
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
}

/**
 * The GitHub outbox: every comment the hub writes goes through here, retried with backoff. A
 * retry after a crash looks for its own marker in the issue's comments before posting, so a
 * comment is never doubled; an edit always renders the thopter's state as it is now.
 */
export function githubProcessor(
  deps: GitHubProcessorDeps,
): Processor<JobTable['comment'] | JobTable['reply'] | JobTable['report'], string> {
  return async (job: Job<JobTable['comment'] | JobTable['reply'] | JobTable['report']>) => {
    try {
      if (job.name === 'report') return await postReport(deps, job.data as JobTable['report']);
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

async function postStatus(deps: GitHubProcessorDeps, data: JobTable['comment']): Promise<string> {
  const record = await deps.store.get(data.thopterId);
  if (!record || record.request.source !== 'github' || record.request.issue.number === undefined)
    return 'not a GitHub thopter';
  const { repository } = record.request;
  const number = record.request.issue.number;
  const client = deps.github.for(repository);
  if (!client) return `${repository} is not watched`;
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
  for (const c of await client.comments(data.repository, data.issueNumber)) {
    if (c.body?.startsWith(marker) && (await client.wrote(c))) return 'already replied';
  }
  await client.createComment(data.repository, data.issueNumber, `${marker}\n${data.body}`);
  return 'replied';
}

/**
 * A report: a new comment on the issue, once per thopter and key (its marker is looked for first,
 * so a retry after a lost response posts nothing twice). The status comment then links to it.
 */
async function postReport(deps: GitHubProcessorDeps, data: JobTable['report']): Promise<string> {
  const record = await deps.store.get(data.thopterId);
  if (!record || record.request.source !== 'github' || record.request.issue.number === undefined)
    return 'not a GitHub thopter';
  const { repository } = record.request;
  const number = record.request.issue.number;
  const client = deps.github.for(repository);
  if (!client) return `${repository} is not watched`;
  const marker = reportMarker(record.id, data.key);
  for (const c of await client.comments(repository, number)) {
    if (c.body?.startsWith(marker) && (await client.wrote(c))) return 'already reported';
  }
  // At the end the machine is gone: its words come from the transcript kept at the teardown.
  const kept = data.key === 'end' ? lastAgentMessage(await deps.transcripts.load(record.id)) : undefined;
  const lastMessage = (kept ?? record.finish?.lastMessage)?.text;
  const body = renderReport(record, { key: data.key, publicUrl: deps.publicUrl, lastMessage });
  const commentId = await client.createComment(repository, number, body);
  const url = `${record.request.issue.url ?? `https://github.com/${repository}/issues/${number}`}#issuecomment-${commentId}`;
  await deps.store.setLastReport(record.id, { key: data.key, url, at: new Date().toISOString() });
  // The status comment links to the latest report.
  await deps.queues.enqueue('comment', { thopterId: record.id, label: data.label });
  return `reported: ${data.key}`;
}
