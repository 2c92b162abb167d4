import { ThopterError, messageOf } from '../errors.js';
import { ackMarker, replyMarker } from '../github/render.js';
import {
  isBot,
  type GitHubComment,
  type GitHubReview,
  type GitHubReviewComment,
  type GitHubUser,
} from '../github/schemas.js';
import { tellAgent } from '../processors/tell.js';
import { isFinal, type ThopterRecord } from '../thopters/record.js';
import { COMMAND_USAGE, findCommand, type FoundCommand } from './command.js';
import type { continueOnIssue, ScannerDeps } from './github.js';
import { labelOf } from './intake.js';
import { mayAct } from './permission.js';

/**
 * A thopter's pull request (the one from its work branch) is a place to talk to it: a `/thopter
 * tell|continue|kill` in a comment, a review or a review comment acts on that thopter, and a review
 * that requests changes is told to its agent. Each of these is one instance: `comment:{id}`,
 * `review:{id}`, `review-comment:{id}`, acted on once (across polls, webhooks, hubs and restarts)
 * under a handled mark keyed by repository, pull request and instance.
 */

/** A claim on an instance while it is acted on; a hub that dies meanwhile lets it go after this. */
const CLAIM_S = 600;

/** Replies that end an instance: once one of the hub's is on the pull request, it was handled. */
const FINAL_REPLIES = [
  ...['refused', 'invalid', 'not-here', 'kill', 'ended', 'told', 'waiting'],
  // `/thopter continue`'s (scanner/github.ts).
  ...['continue-none', 'continue-busy', 'continue-told', 'paused', 'budget'],
];

/** How long a pull request is remembered as not a thopter's (its updates within this cost nothing). */
const NOT_OURS_S = 7 * 86_400;

/** The prefix of every work branch (processors/phases/phase.ts `workBranch`). */
const WORK_BRANCH_PREFIX = 'thopter/';

/**
 * The thopter a pull request belongs to, or null. The index the pull-request job keeps answers
 * first; without it (a pull request someone else opened from a work branch, or Redis lost) the
 * head branch names it. A continuation (`/thopter continue`) carries on the same work branch, so
 * the live thopter on that branch wins over the ended one the index may still name.
 */
export async function thopterOfPullRequest(
  deps: ScannerDeps,
  repository: string,
  number: number,
): Promise<ThopterRecord | null> {
  const indexed = await deps.store.pullRequestThopter(repository, number);
  const record = indexed ? await deps.store.get(indexed) : null;
  if (record && !isFinal(record.state)) return record;
  // A continuation names its branch from the start: it is found while it is still provisioning.
  const branchOf = (t: ThopterRecord) => t.machine?.workBranch ?? t.request.continues?.workBranch;
  const ours = (await deps.store.list({ limit: 5000 })).filter(
    (t) => t.request.repository === repository && branchOf(t),
  );
  // No thopter ever worked on this repository: no pull request of it is one's, and GitHub is not asked.
  if (!record && ours.length === 0) return null;
  let head = record?.machine?.workBranch;
  if (!head) {
    const client = deps.github.for(repository);
    if (!client) return null;
    // A pull request's head branch never changes: one from another branch is remembered as not
    // a thopter's, so polls that see it change do not ask GitHub again.
    const notOurs = `${deps.config.redisPrefix}:pull-request:not-ours:${repository}#${number}`;
    if (await deps.redis.exists(notOurs)) return null;
    try {
      const pr = await client.pullRequest(repository, number);
      // A fork's branch may carry a work branch's name (`someone:thopter/42--…`): it is not ours.
      const owner = pr.head.label?.split(':')[0];
      head =
        owner === undefined || owner.toLowerCase() === repository.split('/')[0]!.toLowerCase()
          ? pr.head.ref
          : '';
    } catch (err) {
      if ((err as { status?: number }).status !== 404) throw err;
      head = ''; // deleted (or never one): nothing to act on
    }
    if (!head.startsWith(WORK_BRANCH_PREFIX)) {
      await deps.redis.set(notOurs, '1', 'EX', NOT_OURS_S);
      return null;
    }
  }
  const onBranch = ours.filter((t) => branchOf(t) === head);
  return onBranch.find((t) => !isFinal(t.state)) ?? record ?? onBranch[0] ?? null;
}

/** One thing written on the pull request that may ask something of its thopter. */
interface Source {
  instance: string;
  text: string;
  author: GitHubUser | null;
  url?: string;
  /** For a review: what it says, with its line comments. */
  review?: { review: GitHubReview; comments: GitHubReviewComment[] };
}

export interface PullRequestNews {
  repository: string;
  /** The pull request's number (GitHub numbers pull requests and issues together). */
  number: number;
  thopter: ThopterRecord;
  /** Only this instance (a webhook's); all of them when absent (a poll). */
  only?: string;
}

/**
 * Reads a thopter's pull request as GitHub shows it now (its comments, reviews and review
 * comments; conditional requests, so an unchanged pull request costs no rate limit) and acts on
 * each command and each review that requests changes.
 */
export async function actOnPullRequest(
  deps: ScannerDeps,
  news: PullRequestNews,
  /** `/thopter continue`'s handler (scanner/github.ts, which calls this module: passed in, not imported). */
  continueOn: typeof continueOnIssue,
): Promise<void> {
  const { repository, number } = news;
  const client = deps.github.for(repository);
  if (!client) return;
  const kind = news.only?.split(':')[0];
  const [comments, reviews, reviewComments] = await Promise.all([
    client.comments(repository, number),
    !kind || kind === 'review' ? client.reviews(repository, number) : [],
    !kind || kind.startsWith('review') ? client.reviewComments(repository, number) : [],
  ]);
  const sources: Source[] = [
    ...comments.map((c) => ({
      instance: `comment:${c.id}`,
      text: c.body ?? '',
      author: c.user,
      url: c.html_url,
    })),
    // A PENDING review is its author's draft: GitHub shows it to nobody else, and neither does the hub.
    ...reviews
      .filter((r) => r.state !== 'PENDING')
      .map((r) => ({
        instance: `review:${r.id}`,
        text: r.body ?? '',
        author: r.user,
        url: r.html_url,
        review: { review: r, comments: reviewComments.filter((c) => c.pull_request_review_id === r.id) },
      })),
    ...reviewComments.map((c) => ({
      instance: `review-comment:${c.id}`,
      text: c.body ?? '',
      author: c.user,
      url: c.html_url,
    })),
  ];
  for (const source of sources) {
    if (news.only && source.instance !== news.only) continue;
    // The hub's own comments (and every bot's) never act.
    if (isBot(source.author)) continue;
    const found = findCommand(source.text);
    const changesRequested = source.review?.review.state === 'CHANGES_REQUESTED';
    if (!found && !changesRequested) continue;
    try {
      // A review that requests changes and says `/thopter tell` in its body is still the review:
      // its line comments go to the agent with it.
      // (A command by someone without write access goes the command's way: it gets its refusal.)
      const asReview =
        changesRequested &&
        (!found || (found.command.kind === 'tell' && (await mayAct(deps, repository, source.author!.login))));
      await once(deps, news, source.instance, comments, () =>
        asReview ? tellReview(deps, news, source) : actOnCommand(deps, news, source, found!, continueOn),
      );
    } catch (err) {
      deps.log.error(
        {
          issue: `${repository}#${number}`,
          thopter: news.thopter.id,
          instance: source.instance,
          err: messageOf(err),
        },
        'pull request command not handled',
      );
    }
  }
}

/**
 * Runs `act` for one instance unless it was handled: a handled mark in Redis, claimed before
 * acting (a poll and a webhook seeing the same review at once act once), or, with Redis lost, a
 * final reply of the hub's on the pull request.
 */
async function once(
  deps: ScannerDeps,
  news: PullRequestNews,
  instance: string,
  comments: GitHubComment[],
  act: () => Promise<void>,
): Promise<void> {
  const key = keyOf(news, instance);
  const handledKey = `${deps.config.redisPrefix}:scan:handled:${key}`;
  const claimed = await deps.redis.set(handledKey, 'acting', 'EX', CLAIM_S, 'NX');
  if (!claimed) return;
  const done = () => deps.redis.set(handledKey, new Date().toISOString());
  const client = deps.github.for(news.repository)!;
  const markers = FINAL_REPLIES.map((suffix) => replyMarker(`${key}:${suffix}`));
  for (const c of comments) {
    if (markers.some((m) => (c.body ?? '').startsWith(m)) && (await client.wrote(c)))
      return void (await done());
  }
  try {
    await act();
  } catch (err) {
    await deps.redis.del(handledKey);
    throw err;
  }
  await done();
}

const keyOf = (news: PullRequestNews, instance: string) => `${news.repository}#${news.number}@${instance}`;

function replier(deps: ScannerDeps, news: PullRequestNews, instance: string) {
  return (suffix: string, body: string) =>
    deps.queues.enqueue('reply', {
      repository: news.repository,
      issueNumber: news.number,
      key: `${keyOf(news, instance)}:${suffix}`,
      body,
      label: `${news.repository}#${news.number}`,
    });
}

async function actOnCommand(
  deps: ScannerDeps,
  news: PullRequestNews,
  source: Source,
  found: FoundCommand,
  continueOn: typeof continueOnIssue,
): Promise<void> {
  const reply = replier(deps, news, source.instance);
  const who = `@${source.author!.login}`;
  const { thopter } = news;
  if (!(await mayAct(deps, news.repository, source.author!.login))) {
    await reply(
      'refused',
      `${who}, thank you for asking, but only people with write access to ${news.repository} can run thopters here.`,
    );
    return;
  }
  const { command } = found;
  if (command.kind === 'invalid') {
    await reply(
      'invalid',
      `${who}: \`${found.line}\` is not a command I understand: ${command.problem}.\n\nUse ${COMMAND_USAGE}.`,
    );
    return;
  }
  const number = thopter.request.issue.number;
  if (command.kind === 'launch' || (command.kind === 'continue' && number === undefined)) {
    await reply(
      'not-here',
      `${who}: this pull request is thopter \`${thopter.id}\`'s work: here \`/thopter tell TEXT\`, \`/thopter continue [TEXT]\` and \`/thopter kill\` act on it. Start new thopters from an issue.`,
    );
    return;
  }
  if (command.kind === 'continue') {
    // Continued as on the thopter's issue (its thread goes to the new thopter, its status comment
    // goes there), from this pull request's thopter unless `--id` names another.
    const client = deps.github.for(news.repository)!;
    const instance = `pull:${news.number}:${source.instance}`;
    const key = `${news.repository}#${number}@${instance}`;
    const detected = {
      repository: news.repository,
      issue: await client.issue(news.repository, number!),
      comments: await client.comments(news.repository, number!),
      instance,
      author: source.author!,
      found,
    };
    // Its acknowledgement is on the issue, where its thopter's status is: with Redis lost (no
    // handled mark), that says it was acted on.
    const ack = ackMarker(instance);
    for (const c of detected.comments) {
      if ((c.body ?? '').startsWith(ack) && (await client.wrote(c))) return;
    }
    await continueOn(deps, detected, {
      key,
      text: command.text,
      id: command.id ?? thopter.id,
      reply,
      who,
    });
    return;
  }
  if (command.kind === 'kill') {
    if (isFinal(thopter.state)) {
      await reply('ended', `${who}: thopter \`${thopter.id}\` has ended already.`);
      return;
    }
    await deps.queues.enqueue('destroy', {
      thopterId: thopter.id,
      label: labelOf(thopter.request),
      reason: `/thopter ${found.line.split(/\s+/)[1]} by ${who} on pull request #${news.number}`,
      ...(command.discard ? { save: false } : {}),
    });
    await reply('kill', `${who}: destroying \`${thopter.id}\`.`);
    return;
  }
  await tell(deps, news, source, command.text);
}

/** A review that requests changes: its body and line comments reach the agent as one message. */
async function tellReview(deps: ScannerDeps, news: PullRequestNews, source: Source): Promise<void> {
  // Anyone who can read a public repository can review it; only writers steer its thopters.
  if (!(await mayAct(deps, news.repository, source.author!.login))) {
    deps.log.info(
      { issue: `${news.repository}#${news.number}`, thopter: news.thopter.id, instance: source.instance },
      'review by someone without write access: not told to the agent',
    );
    return;
  }
  await tell(deps, news, source, renderReview(news.number, source.author!.login, source.review!));
}

async function tell(deps: ScannerDeps, news: PullRequestNews, source: Source, text: string): Promise<void> {
  const reply = replier(deps, news, source.instance);
  const who = `@${source.author!.login}`;
  const { thopter } = news;
  if (!isFinal(thopter.state) && thopter.state !== 'running') {
    // As on the issue: a message is pasted only into an agent that runs (processors/tell.ts).
    const why =
      thopter.state === 'queued' || thopter.state === 'provisioning'
        ? 'its agent is not started yet; write it again once it runs'
        : 'it is ending and its agent takes no messages';
    await reply('waiting', `${who}: thopter \`${thopter.id}\` is ${thopter.state}: ${why}.`);
    return;
  }
  let outcome;
  try {
    outcome = isFinal(thopter.state)
      ? 'ended'
      : await tellAgent(deps, thopter.id, {
          key: `github:${keyOf(news, source.instance)}`,
          text,
          from: source.author!.login,
          ...(source.url ? { url: source.url } : {}),
        });
  } catch (err) {
    if (err instanceof ThopterError && err.code === 'bad-input') {
      await reply('invalid', `${who}: ${err.message}.`);
      return;
    }
    throw err;
  }
  if (outcome === 'told') {
    await reply('told', `${who}: sent to thopter \`${thopter.id}\`'s agent.`);
    return;
  }
  await reply(
    'ended',
    `${who}: thopter \`${thopter.id}\` has ended, so its agent did not get this. Write \`/thopter continue\` on issue #${thopter.request.issue.number} to carry on its work branch.`,
  );
}

/** The message a review that requests changes becomes: its body, then each line comment with its file and line. */
export function renderReview(
  number: number,
  login: string,
  { review, comments }: { review: GitHubReview; comments: GitHubReviewComment[] },
): string {
  const lines = [`@${login} reviewed pull request #${number} and requested changes:`];
  const body = (review.body ?? '').trim();
  if (body) lines.push('', body);
  if (comments.length) lines.push('', 'On the code:');
  for (const c of comments) {
    const line = c.line ?? c.original_line;
    lines.push(`- \`${c.path}\`${line ? ` line ${line}` : ''}: ${(c.body ?? '').trim()}`);
  }
  return lines.join('\n');
}
