import type { Redis } from 'ioredis';
import type { Config } from '../config.js';
import { ThopterError, messageOf } from '../errors.js';
import type { GitHubClients } from '../github/clients.js';
import { ackMarker, replyMarker, statusShowsEnd } from '../github/render.js';
import { isBot, type GitHubComment, type GitHubIssue, type GitHubUser } from '../github/schemas.js';
import type { Logger } from '../log.js';
import { tellAgent } from '../processors/tell.js';
import type { Prompts } from '../prompts.js';
import type { Provider } from '../providers/types.js';
import type { HubQueues } from '../queues/index.js';
import { isFinal, type IssueComment, type ThopterRecord } from '../thopters/record.js';
import type { ThopterStore } from '../thopters/store.js';
import { COMMAND_USAGE, findCommand, type FoundCommand } from './command.js';
import {
  agentWaits,
  CONTINUE_PROMPT,
  continuationOf,
  continueTarget,
  launchPrompts,
  threadForAgent,
} from './continue.js';
import { acceptLaunch, thopterIdFor, type LaunchInput } from './intake.js';
import type { Intake } from './pause.js';
import { mayAct } from './permission.js';
import { actOnPullRequest, thopterOfPullRequest } from './pull-requests.js';

export interface ScannerDeps {
  config: Config;
  redis: Redis;
  store: ThopterStore;
  queues: HubQueues;
  prompts: Prompts;
  provider: Provider;
  github: GitHubClients;
  intake: Intake;
  log: Logger;
}

/** Seed: each poll looks back a minute further than the last change it saw. */
const OVERLAP_MS = 60_000;

/** Repositories read at once in one poll. */
const SCAN_CONCURRENCY = 8;

/** One poll: every watched repository; one whose token fails is reported and the rest go on. */
export async function scanAll(deps: ScannerDeps): Promise<void> {
  // Repositories are independent (each has its own token and client): several are read at once,
  // so a thousand idle ones fit in one polling interval.
  const queue = [...deps.github.repositories];
  const worker = async () => {
    for (let repository = queue.shift(); repository; repository = queue.shift()) {
      try {
        await scanRepository(deps, repository);
        await deps.github.setHealth(repository);
      } catch (err) {
        await deps.github.setHealth(
          repository,
          deps.github.describeAppFailure(repository, err) ?? describe(err),
        );
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(SCAN_CONCURRENCY, queue.length) }, worker));
}

/**
 * Polls one repository for issues updated since the newest change seen (less a minute), fetches
 * each one's comments, and acts on the commands found. `since` moves only when something changed,
 * so an idle repository's poll repeats the same request and GitHub answers 304, for free.
 */
export async function scanRepository(deps: ScannerDeps, repository: string): Promise<void> {
  const { redis, config } = deps;
  const client = deps.github.for(repository);
  if (!client) return;
  const markKey = `${config.redisPrefix}:scan:newest:${repository}`;
  const newestSeen = await redis.get(markKey);
  const since = newestSeen
    ? new Date(Date.parse(newestSeen) - OVERLAP_MS).toISOString()
    : new Date(Date.now() - config.github.coldStartLookbackMs).toISOString();
  let newest = newestSeen ?? since;
  const closed = new Set<number>();
  for (const issue of await client.issuesSince(repository, since)) {
    if (issue.updated_at > newest) newest = issue.updated_at;
    if (issue.pull_request !== undefined && issue.state === 'open') {
      // A thopter's pull request is read whatever GITHUB_INCLUDE_PULL_REQUESTS says: its reviews
      // and commands act on that thopter.
      // One pull request GitHub will not show (a token without pull request access, an outage)
      // must not hold the repository's poll: its other issues go on, as for a failed command.
      try {
        const thopter = await thopterOfPullRequest(deps, repository, issue.number);
        if (thopter) {
          await actOnPullRequest(deps, { repository, number: issue.number, thopter }, continueOnIssue);
          continue;
        }
      } catch (err) {
        deps.log.error(
          { issue: `${repository}#${issue.number}`, err: messageOf(err) },
          "a thopter's pull request could not be read",
        );
        continue;
      }
    }
    if (issue.pull_request !== undefined && !config.github.includePullRequests) continue;
    // A closed issue launches nothing; when it closed, its thopters end (as the webhook does).
    if (issue.state === 'closed') {
      closed.add(issue.number);
      continue;
    }
    const comments = await client.comments(repository, issue.number);
    await actOnIssue(deps, repository, issue, comments);
  }
  if (closed.size > 0 && config.github.destroyOnClose) {
    // The list is as old as this poll (every changed issue's comments were read since): an issue
    // reopened meanwhile keeps its thopters, so each closed one that has some is asked again.
    const closedNow = new Map<number, boolean>();
    for (const t of await liveThoptersOf(deps, repository, closed)) {
      const number = t.request.issue.number!;
      if (!closedNow.has(number))
        closedNow.set(number, (await client.issue(repository, number)).state === 'closed');
      if (closedNow.get(number)) {
        const label = `${repository}#${number}`;
        await deps.queues.enqueue('destroy', { thopterId: t.id, label, reason: 'the issue was closed' });
      }
    }
  }
  await redis.set(markKey, newest);
}

/** Acts on every command in an issue's body and comments (or only in `onlyInstance`). */
export async function actOnIssue(
  deps: ScannerDeps,
  repository: string,
  issue: GitHubIssue,
  comments: GitHubComment[],
  onlyInstance?: string,
): Promise<void> {
  const sources = [
    { instance: 'body', text: issue.body ?? '', author: issue.user },
    ...comments.map((c) => ({ instance: `comment:${c.id}`, text: c.body ?? '', author: c.user })),
  ];
  for (const { instance, text, author } of sources) {
    if (onlyInstance && instance !== onlyInstance) continue;
    const found = findCommand(text);
    if (!found || isBot(author)) continue;
    try {
      await actOnCommand(deps, { repository, issue, comments, instance, author: author!, found });
    } catch (err) {
      deps.log.error(
        { issue: `${repository}#${issue.number}`, instance, err: messageOf(err) },
        'command not handled',
      );
    }
  }
}

export interface Detected {
  repository: string;
  issue: GitHubIssue;
  comments: GitHubComment[];
  instance: string;
  author: GitHubUser;
  found: FoundCommand;
}

/**
 * One command. Idempotent: its thopter id and its replies derive from repository, issue and
 * instance, so detecting it again (next poll, a webhook, another hub) changes nothing.
 */
async function actOnCommand(deps: ScannerDeps, d: Detected): Promise<void> {
  const { store, queues, redis, config } = deps;
  const key = `${d.repository}#${d.issue.number}@${d.instance}`;
  const label = `${d.repository}#${d.issue.number}`;
  const thopterId = thopterIdFor(`github:${key}`);
  const handledKey = `${config.redisPrefix}:scan:handled:${key}`;
  const reply = (suffix: string, body: string) =>
    queues.enqueue('reply', {
      repository: d.repository,
      issueNumber: d.issue.number,
      key: `${key}:${suffix}`,
      body,
      label,
    });

  const existing = await store.get(thopterId);
  if (existing) {
    // Accepted before: make sure its lifecycle job and acknowledgement exist (a crash may have
    // come between), and nothing else.
    if (existing.state === 'queued') {
      await queues.enqueue('lifecycle', { thopterId, label }, { priority: existing.request.priority });
    }
    if (existing.commentId === undefined) await queues.enqueue('comment', { thopterId, label });
    return;
  }
  if (await redis.exists(handledKey)) return;
  const handled = () => redis.set(handledKey, new Date().toISOString());
  const who = `@${d.author.login}`;

  // Redis lost (not restarted from its AOF) forgets every record and handled mark, and the next
  // poll looks back over commands already acted on. The issue still shows what was done: a
  // command with an acknowledgement or a final reply is never acted on again.
  const answered = await answeredOnIssue(deps, d, key);
  if (answered === 'replied') return void (await handled());
  // A tell is acknowledged with the hub's reaction, not a comment: that reaction is its mark.
  if (d.found.command.kind === 'tell' && (await reactedTo(deps, d))) return void (await handled());
  if (answered) {
    // Its thopter's record is gone. If the acknowledgement shows it alive, say so, once: the
    // command is not run again (at most one thopter per command), and reconciliation destroys
    // the machine the hub no longer knows.
    if (!statusShowsEnd(answered.body ?? '')) {
      deps.log.warn({ thopter: thopterId, issue: label, instance: d.instance }, 'thopter lost with Redis');
      await reply(
        'lost',
        `${who}: this hub lost its record of thopter \`${thopterId}\` (its Redis was emptied): reconciliation stops that thopter, and this command is not run again. Write \`/thopter\` in a new comment to start a new one.`,
      );
    }
    return void (await handled());
  }

  if (!(await mayAct(deps, d.repository, d.author.login))) {
    await reply(
      'refused',
      `${who}, thank you for asking, but only people with write access to ${d.repository} can run thopters here.`,
    );
    return void (await handled());
  }
  if (d.found.ignored > 0) {
    await reply(
      'ignored',
      `${who}: only the first \`/thopter\` line of a comment counts; the other ${d.found.ignored} ${d.found.ignored === 1 ? 'was' : 'were'} ignored.`,
    );
  }
  const { command } = d.found;
  if (command.kind === 'invalid') {
    const prompts = (await launchPrompts(deps.prompts)).join(', ');
    const gcs = (await deps.provider.goldenClaudes()).join(', ') || '(none yet)';
    await reply(
      'invalid',
      `${who}: \`${d.found.line}\` is not a command I understand: ${command.problem}.\n\nUse ${COMMAND_USAGE}. Prompts: ${prompts}. Golden claudes: ${gcs}.`,
    );
    return void (await handled());
  }
  if (command.kind === 'kill') {
    const doomed = await destroyIssueThopters(
      deps,
      d.repository,
      d.issue.number,
      `/thopter ${d.found.line.split(/\s+/)[1]} by ${who}`,
      { save: !command.discard },
    );
    await reply(
      'kill',
      doomed.length
        ? `${who}: destroying ${doomed.map((t) => `\`${t.id}\``).join(', ')}.`
        : `${who}: there is no live thopter on this issue.`,
    );
    return void (await handled());
  }
  if (command.kind === 'tell') {
    await tellOnIssue(deps, d, command, key, reply);
    return void (await handled());
  }
  if (command.kind === 'continue') {
    await continueOnIssue(deps, d, { key, text: command.text, id: command.id, reply, who });
    return void (await handled());
  }
  const intake = await deps.intake.state();
  if (intake.paused) {
    await reply(
      'paused',
      `${who}: the hub is paused and accepts no new thopters right now. Write \`/thopter\` again once it is resumed.`,
    );
    return void (await handled());
  }
  const accepted = await launchFromIssue(deps, d, reply, {
    comments: d.comments,
    gc: command.gc,
    prompt: command.prompt,
    dedupeKey: `github:${key}`,
  });
  if (!accepted) return void (await handled());
  await queues.enqueue('comment', { thopterId, label });
}

/**
 * Accepts a launch (or a continue) from an issue with the issue as GitHub has it now. A launch the
 * hub refuses (bad input, a daily budget spent) gets its one reply, and false.
 */
async function launchFromIssue(
  deps: ScannerDeps,
  d: Detected,
  reply: (suffix: string, body: string) => Promise<unknown>,
  launch: Pick<LaunchInput, 'gc' | 'prompt' | 'dedupeKey' | 'continues'> & { comments: GitHubComment[] },
): Promise<boolean> {
  const repo = await deps.github.for(d.repository)!.repository(d.repository);
  const { comments, ...rest } = launch;
  try {
    await acceptLaunch(deps, {
      ...rest,
      source: 'github',
      repository: d.repository,
      cloneUrl: repo.clone_url,
      instance: d.instance,
      issue: {
        number: d.issue.number,
        title: d.issue.title,
        body: d.issue.body ?? '',
        url: d.issue.html_url,
        author: d.issue.user?.login,
        mentionAuthor: d.author.login,
        comments: toIssueComments(comments),
      },
      requestedBy: d.author.login,
    });
    return true;
  } catch (err) {
    const refusal =
      err instanceof ThopterError && err.code === 'bad-input'
        ? 'invalid'
        : err instanceof ThopterError && err.code === 'over-budget'
          ? 'budget'
          : err instanceof ThopterError && err.code === 'conflict'
            ? 'continue-busy'
            : undefined;
    if (!refusal) throw err;
    await reply(refusal, `@${d.author.login}: ${(err as Error).message.replace(/^(\w+): /, '')}.`);
    return false;
  }
}

/** Replies that end a command: once one is on the issue, the command was handled. */
const FINAL_REPLIES = [
  'refused',
  'invalid',
  'kill',
  'paused',
  'lost',
  'continue-none',
  'continue-busy',
  'continue-told',
  'no-thopter',
  'tell-id',
  'tell-waiting',
  'budget',
];

/** Where a command stands, for a reaction: its comment, or the issue for a command in the body. */
function reactionTarget(d: Detected): { commentId: number } | { issueNumber: number } {
  const comment = /^comment:(\d+)$/.exec(d.instance);
  return comment ? { commentId: Number(comment[1]) } : { issueNumber: d.issue.number };
}

/** Whether the hub's own account reacted to the command: it was acted on, whatever Redis forgot. */
async function reactedTo(deps: ScannerDeps, d: Detected): Promise<boolean> {
  return deps.github.for(d.repository)!.reacted(d.repository, reactionTarget(d), TOLD_REACTION);
}

const TOLD_REACTION = 'eyes';

/**
 * `/thopter tell`: the text goes to the issue's live thopter (`--id`, else the newest one whose
 * agent runs), acknowledged with a reaction; the report of the agent's next turn answers it. No
 * live thopter, an id that is not one of them, or an agent not started yet: one reply says so.
 */
async function tellOnIssue(
  deps: ScannerDeps,
  d: Detected,
  command: { text: string; id?: string },
  key: string,
  reply: (suffix: string, body: string) => Promise<unknown>,
): Promise<void> {
  const who = `@${d.author.login}`;
  const live = await liveThoptersOf(deps, d.repository, d.issue.number);
  const noThopter = () =>
    reply(
      'no-thopter',
      `${who}: there is no live thopter on this issue to tell. To have a new one pick up the last one's work branch, write \`/thopter continue\` with your message after it.`,
    );
  if (live.length === 0) return void (await noThopter());
  // Newest first (the store lists so): the newest whose agent runs, else the newest.
  const target = command.id
    ? live.find((t) => t.id === command.id)
    : (live.find((t) => t.state === 'running') ?? live[0]);
  if (!target) {
    const ids = live.map((t) => `\`${t.id}\``).join(', ');
    return void (await reply(
      'tell-id',
      `${who}: \`${command.id}\` is not a live thopter of this issue; ${live.length === 1 ? 'its live thopter is' : 'its live thopters are'} ${ids}. Write \`/thopter tell --id ID\` with one of them.`,
    ));
  }
  if (target.state !== 'running') {
    // A stopping or kept thopter never runs again: what helps then is a continue.
    const next =
      target.state === 'queued' || target.state === 'provisioning'
        ? 'its agent is not started yet, so your message was not sent. Write `/thopter tell` again once it runs.'
        : `it is ending and its agent takes no messages, so your message was not sent. Once it has ended, \`/thopter continue\` with your message starts a new thopter on its work branch${target.state === 'kept' ? ' (`/thopter kill` ends a kept thopter now)' : ''}.`;
    return void (await reply('tell-waiting', `${who}: thopter \`${target.id}\` is ${target.state}: ${next}`));
  }
  const comment = d.comments.find((c) => `comment:${c.id}` === d.instance);
  let told;
  try {
    told = await tellAgent(deps, target.id, {
      key: `github:${key}`,
      text: command.text,
      from: d.author.login,
      url: comment?.html_url ?? d.issue.html_url,
    });
  } catch (err) {
    if (err instanceof ThopterError && err.code === 'bad-input')
      return void (await reply('invalid', `${who}: ${err.message}.`));
    throw err;
  }
  if (told !== 'told') return void (await noThopter());
  const on = reactionTarget(d);
  await deps.queues.enqueue('react', {
    repository: d.repository,
    issueNumber: d.issue.number,
    ...('commentId' in on ? { commentId: on.commentId } : {}),
    content: TOLD_REACTION,
    label: `${d.repository}#${d.issue.number}`,
  });
}

/**
 * The hub's acknowledgement of a command, `'replied'` when the hub answered it with a final
 * reply instead, or null.
 */
async function answeredOnIssue(
  deps: ScannerDeps,
  d: Detected,
  key: string,
): Promise<GitHubComment | 'replied' | null> {
  const ack = ackMarker(d.instance);
  const replies = FINAL_REPLIES.map((suffix) => replyMarker(`${key}:${suffix}`));
  for (const c of d.comments) {
    const body = c.body ?? '';
    const isAck = body.startsWith(ack);
    if (!isAck && !replies.some((m) => body.startsWith(m))) continue;
    if (!(await deps.github.for(d.repository)!.wrote(c))) continue;
    return isAck ? c : 'replied';
  }
  return null;
}

/**
 * `/thopter continue [--id ID] [TEXT]`: a new thopter on the work branch of the issue's last ended
 * thopter (or the one `--id` names). Its id derives from the command like a launch's, so a command
 * detected again finds it and adds nothing. A live thopter is not doubled: the reply points to it.
 */
export async function continueOnIssue(
  deps: ScannerDeps,
  d: Detected,
  c: {
    /** The command's key (repository, issue, instance): the new thopter's id derives from it. */
    key: string;
    text: string | undefined;
    id: string | undefined;
    reply: (suffix: string, body: string) => Promise<unknown>;
    who: string;
  },
): Promise<void> {
  const { reply, who } = c;
  // From a pull request, its issue may be closed: a closed issue starts no thopter (and would end
  // the one started, with GITHUB_DESTROY_ON_CLOSE).
  if (d.issue.state === 'closed') {
    await reply(
      'continue-none',
      `${who}: issue #${d.issue.number} is closed, and a closed issue starts no thopter. Reopen it, then write \`/thopter continue\` again.`,
    );
    return;
  }
  const target = continueTarget(await deps.store.list({ limit: 5000 }), d.repository, d.issue.number, c.id);
  if (target.kind === 'none') {
    await reply(
      'continue-none',
      `${who}: there is nothing to continue: ${target.why}. Write \`/thopter\` to start a new thopter.`,
    );
    return;
  }
  if (target.kind === 'live' && c.text && agentWaits(target.thopter)) {
    // Its agent waits for an answer: the text is one, said as a `tell` (once per command key).
    const url = d.comments.find((comment) => `comment:${comment.id}` === d.instance)?.html_url;
    const told = await tellAgent(deps, target.thopter.id, {
      key: `github:${c.key}`,
      text: c.text,
      from: d.author.login,
      ...(url ? { url } : {}),
    }).catch((err: unknown) => {
      if (err instanceof ThopterError && err.code === 'bad-input') return err;
      throw err;
    });
    if (told instanceof ThopterError) {
      await reply('invalid', `${who}: ${told.message}.`);
    } else if (told === 'told') {
      await reply(
        'continue-told',
        `${who}: thopter \`${target.thopter.id}\` is still on this issue and its agent waits for an answer, so your text went to it as a \`/thopter tell\`; its next report answers it.`,
      );
    } else {
      await reply(
        'continue-busy',
        `${who}: thopter \`${target.thopter.id}\` ended just now, before your text reached it. Write \`/thopter continue\` again to carry on its work.`,
      );
    }
    return;
  }
  if (target.kind === 'live') {
    const live = `${who}: thopter \`${target.thopter.id}\``;
    const words =
      target.thopter.state === 'stopping'
        ? `${live} is ending (its work is being saved), so \`continue\` starts no other yet. Write \`/thopter continue\` again once its end report is here.`
        : target.thopter.state === 'kept'
          ? `${live} failed and its machine is kept for a look, so \`continue\` starts no other. Write \`/thopter kill\` first, then \`/thopter continue\`.`
          : `${live} is still working on this issue, so \`continue\` starts no other. Write \`/thopter tell TEXT\` to talk to its agent, or \`/thopter kill\` first to end it.`;
    await reply('continue-busy', words);
    return;
  }
  if ((await deps.intake.state()).paused) {
    await reply(
      'paused',
      `${who}: the hub is paused and accepts no new thopters right now. Write \`/thopter continue\` again once it is resumed.`,
    );
    return;
  }
  const client = deps.github.for(d.repository)!;
  const ended = target.thopter;
  const thread = await threadForAgent(d.comments, (comment) => client.wrote(comment));
  // PROMPTS_DIR replaced by the operator may have no continue.md: the ended thopter's prompt
  // still works, with the new comments marked in issue.md.
  const prompt = (await deps.prompts.resolve(CONTINUE_PROMPT)) ?? ended.request.prompt;
  const accepted = await launchFromIssue(deps, d, c.reply, {
    comments: thread,
    gc: ended.request.gc,
    prompt,
    dedupeKey: `github:${c.key}`,
    continues: continuationOf(ended, c.text),
  });
  if (!accepted) return;
  await deps.queues.enqueue('comment', {
    thopterId: thopterIdFor(`github:${c.key}`),
    label: `${d.repository}#${d.issue.number}`,
  });
}

/**
 * Destroys every live thopter of some issues (`/thopter kill`, closed issues). Returns them.
 * `save: false` (`/thopter kill --discard`) skips the save of their uncommitted work.
 */
export async function destroyIssueThopters(
  deps: ScannerDeps,
  repository: string,
  numbers: number | ReadonlySet<number>,
  reason: string,
  opts: { save?: boolean } = {},
) {
  const live = await liveThoptersOf(deps, repository, numbers);
  for (const t of live) {
    const label = `${repository}#${t.request.issue.number}`;
    await deps.queues.enqueue('destroy', {
      thopterId: t.id,
      label,
      reason,
      ...(opts.save === false ? { save: false } : {}),
    });
  }
  return live;
}

async function liveThoptersOf(
  deps: ScannerDeps,
  repository: string,
  numbers: number | ReadonlySet<number>,
): Promise<ThopterRecord[]> {
  const wanted = typeof numbers === 'number' ? new Set([numbers]) : numbers;
  return (await deps.store.list({ limit: 5000 })).filter(
    (t) =>
      t.request.repository === repository &&
      t.request.issue.number !== undefined &&
      wanted.has(t.request.issue.number) &&
      !isFinal(t.state),
  );
}

/** GitHub's comments as the request's conversation thread (seed: author and timestamps). */
export function toIssueComments(comments: GitHubComment[]): IssueComment[] {
  return comments.map((c) => ({
    author: c.user?.login ?? 'ghost',
    body: c.body ?? '',
    createdAt: c.created_at,
    updatedAt: c.updated_at,
  }));
}

function describe(err: unknown): string {
  const status = (err as { status?: number }).status;
  if (status === 401)
    return 'the issuesPAT is invalid or expired (GitHub answered 401 Bad credentials): renew it in GITHUB_INTEGRATION_JSON';
  if (status === 403 || status === 404)
    return `the issuesPAT cannot read this repository (GitHub answered ${status}): check its access`;
  return messageOf(err);
}
