import { createHmac, timingSafeEqual } from 'node:crypto';
import { Router } from '@koa/router';
import { z } from 'zod';
import { HttpError, ReadGate } from '../api/http.js';
import { commentSchema, isBot, issueSchema, userSchema } from '../github/schemas.js';
import { actOnIssue, continueOnIssue, destroyIssueThopters, type ScannerDeps } from './github.js';
import { actOnPullRequest, thopterOfPullRequest, type PullRequestNews } from './pull-requests.js';

/**
 * GitHub caps deliveries at 25 MB, but issue and comment events are small: an issue body and a
 * comment body are at most 65,536 characters each, under 400 kB apiece even with every character
 * JSON-escaped, plus a few kB of repository and user objects. Other events are not read at all.
 */
const MAX_DELIVERY_BYTES = 1024 * 1024;

/** Deliveries read at once before their signature can be checked (each up to MAX_DELIVERY_BYTES). */
const MAX_UNVERIFIED_READS = 16;

/** Reviews and review comments matter only on a thopter's pull request (scanner/pull-requests.ts). */
const PULL_REQUEST_EVENTS = new Set(['pull_request_review', 'pull_request_review_comment']);
const EVENTS = new Set(['issues', 'issue_comment', ...PULL_REQUEST_EVENTS]);

const pullRequestDeliverySchema = z.object({
  action: z.string(),
  repository: z.object({ full_name: z.string() }),
  pull_request: z.object({ number: z.number() }),
  review: z.object({ id: z.number(), user: userSchema.nullable() }).optional(),
  comment: z.object({ id: z.number(), user: userSchema.nullable() }).optional(),
});
/** A GitHub App's installation changed: the watched repositories are listed again. */
const INSTALLATION_EVENTS = new Set(['installation', 'installation_repositories']);

const deliverySchema = z.object({
  action: z.string(),
  repository: z.object({ full_name: z.string() }),
  issue: issueSchema,
  comment: commentSchema.optional(),
});

/** GitHub lets a delivery be redelivered for three days; a replay after that meets current state. */
const DELIVERY_MEMORY_S = 4 * 86_400;

/**
 * Remembers a delivery by its `X-GitHub-Delivery` id: null if it was received before, otherwise a
 * handle that forgets it again (for a delivery that could not be acted on).
 */
async function claimDelivery(
  deps: ScannerDeps,
  id: string,
): Promise<{ release: () => Promise<unknown> } | null> {
  if (!/^[\w-]{1,100}$/.test(id)) {
    throw new HttpError(
      400,
      'bad-input',
      'X-GitHub-Delivery is missing or not a delivery id: GitHub sends a GUID with every delivery',
    );
  }
  const key = `${deps.config.redisPrefix}:github:delivery:${id}`;
  const first = await deps.redis.set(key, new Date().toISOString(), 'EX', DELIVERY_MEMORY_S, 'NX');
  return first ? { release: () => deps.redis.del(key) } : null;
}

/** X-Hub-Signature-256 is `sha256=` and the HMAC of the raw body with the webhook secret. */
export function signatureMatches(secret: string, body: Buffer, header: string | undefined): boolean {
  if (!header?.startsWith('sha256=')) return false;
  const expected = Buffer.from(createHmac('sha256', secret).update(body).digest('hex'));
  const given = Buffer.from(header.slice('sha256='.length));
  return given.length === expected.length && timingSafeEqual(given, expected);
}

/**
 * POST /github/webhook: deliveries go through the same detection as polling, so a command is
 * seen within seconds; polling stays on as the safety net, and detecting twice changes nothing.
 */
export function webhookRoutes(deps: ScannerDeps): Router {
  const router = new Router({ sensitive: true, strict: true });
  const gate = new ReadGate(MAX_UNVERIFIED_READS);
  router.post('/github/webhook', async (ctx) => {
    const secret = deps.config.github.webhookSecret;
    if (!secret)
      throw new HttpError(
        404,
        'not-found',
        'the webhook receiver is off: set GITHUB_WEBHOOK_SECRET to turn it on',
      );
    // What GitHub always sends is checked before the body is read: a post without it costs nothing.
    const signature = ctx.get('x-hub-signature-256');
    if (!/^sha256=[0-9a-f]{64}$/.test(signature)) {
      throw new HttpError(
        401,
        'bad-signature',
        'X-Hub-Signature-256 is missing or malformed: set the webhook secret on GitHub to GITHUB_WEBHOOK_SECRET',
      );
    }
    const event = ctx.get('x-github-event');
    if (!event) {
      throw new HttpError(
        400,
        'bad-input',
        'X-GitHub-Event is missing: only GitHub deliveries are taken here',
      );
    }
    if (!EVENTS.has(event) && !(INSTALLATION_EVENTS.has(event) && deps.github.app)) {
      ctx.status = 202;
      ctx.body = { ignored: `event ${event}` };
      return;
    }
    const raw = await gate.read(ctx, MAX_DELIVERY_BYTES);
    if (!signatureMatches(secret, raw, signature)) {
      throw new HttpError(
        401,
        'bad-signature',
        "X-Hub-Signature-256 does not match this hub's GITHUB_WEBHOOK_SECRET",
      );
    }
    ctx.state.auth = 'github';
    if (INSTALLATION_EVENTS.has(event)) {
      // The payload is not trusted for the list: GitHub is asked, as for any other delivery.
      await deps.github.refreshInstallations();
      ctx.status = 202;
      ctx.body = { accepted: event, repositories: deps.github.repositories.length };
      return;
    }
    if (PULL_REQUEST_EVENTS.has(event)) {
      const answer = await reviewDelivery(deps, event, raw, ctx.get('x-github-delivery'));
      ctx.status = answer.status;
      ctx.body = answer.body;
      return;
    }
    let payload: z.infer<typeof deliverySchema>;
    try {
      payload = deliverySchema.parse(JSON.parse(raw.toString('utf8')));
    } catch {
      throw new HttpError(400, 'bad-input', `this is not a ${event} delivery GitHub sends`);
    }
    const repository = payload.repository.full_name;
    const client = deps.github.for(repository);
    if (!client) {
      ctx.status = 202;
      ctx.body = { ignored: `${repository} is not watched` };
      return;
    }
    const { action } = payload;
    if (payload.issue.pull_request !== undefined && event === 'issue_comment' && payload.comment) {
      // A comment on a thopter's pull request acts on that thopter, whatever
      // GITHUB_INCLUDE_PULL_REQUESTS says.
      const thopter = await thopterOfPullRequest(deps, repository, payload.issue.number);
      if (thopter) {
        const news = {
          repository,
          number: payload.issue.number,
          thopter,
          only: `comment:${payload.comment.id}`,
        };
        const answer = await actOnPullRequestDelivery(
          deps,
          news,
          ctx.get('x-github-delivery'),
          `${event}.${action}`,
        );
        ctx.status = answer.status;
        ctx.body = answer.body;
        return;
      }
    }
    if (payload.issue.pull_request !== undefined && !deps.config.github.includePullRequests) {
      ctx.status = 202;
      ctx.body = { ignored: 'pull request' };
      return;
    }
    const delivery = await claimDelivery(deps, ctx.get('x-github-delivery'));
    if (!delivery) {
      // Answered as a success: GitHub would otherwise show it failed, and someone redeliver it.
      ctx.status = 200;
      ctx.body = { ignored: `delivery ${ctx.get('x-github-delivery')} was received before` };
      return;
    }
    let ignored: string | undefined;
    try {
      // A delivery can be old (a replay, a late redelivery, one overtaken by the next): act on
      // the issue as GitHub shows it now, not as the event describes it.
      const issue = await client.issue(repository, payload.issue.number);
      const closedNow = issue.state === 'closed';
      if (event === 'issues' && action === 'closed') {
        if (!closedNow) ignored = 'the issue is open again';
        else if (deps.config.github.destroyOnClose)
          await destroyIssueThopters(deps, repository, issue.number, 'the issue was closed');
      } else if (closedNow) {
        // As polling does: a closed issue launches nothing.
        ignored = 'the issue is closed';
      } else if (event === 'issues' && (action === 'opened' || action === 'edited')) {
        await actOnIssue(deps, repository, issue, await client.comments(repository, issue.number), 'body');
      } else if (
        event === 'issue_comment' &&
        (action === 'created' || action === 'edited') &&
        payload.comment
      ) {
        if (!isBot(payload.comment.user)) {
          await actOnIssue(
            deps,
            repository,
            issue,
            await client.comments(repository, issue.number),
            `comment:${payload.comment.id}`,
          );
        }
      }
    } catch (err) {
      // Not acted on: a redelivery of it must be (polling is the safety net if Redis is away).
      await delivery.release().catch(() => {});
      throw err;
    }
    ctx.status = 202;
    ctx.body = ignored ? { ignored } : { accepted: `${event}.${action}` };
  });
  return router;
}

type Answer = { status: number; body: Record<string, string> };

/**
 * `pull_request_review` (submitted) and `pull_request_review_comment` (created): on a thopter's
 * pull request, the review or comment is read again from GitHub and acted on as a poll would.
 */
async function reviewDelivery(
  deps: ScannerDeps,
  event: string,
  raw: Buffer,
  deliveryId: string,
): Promise<Answer> {
  let payload: z.infer<typeof pullRequestDeliverySchema>;
  try {
    payload = pullRequestDeliverySchema.parse(JSON.parse(raw.toString('utf8')));
  } catch {
    throw new HttpError(400, 'bad-input', `this is not a ${event} delivery GitHub sends`);
  }
  const repository = payload.repository.full_name;
  if (!deps.github.for(repository)) return { status: 202, body: { ignored: `${repository} is not watched` } };
  const wanted = event === 'pull_request_review' ? ['submitted', 'edited'] : ['created', 'edited'];
  const about = event === 'pull_request_review' ? payload.review : payload.comment;
  if (!wanted.includes(payload.action) || !about) {
    return { status: 202, body: { ignored: `${event}.${payload.action}` } };
  }
  if (isBot(about.user)) return { status: 202, body: { ignored: 'written by a bot' } };
  const number = payload.pull_request.number;
  const thopter = await thopterOfPullRequest(deps, repository, number);
  if (!thopter) return { status: 202, body: { ignored: "not a thopter's pull request" } };
  const only = `${event === 'pull_request_review' ? 'review' : 'review-comment'}:${about.id}`;
  return actOnPullRequestDelivery(
    deps,
    { repository, number, thopter, only },
    deliveryId,
    `${event}.${payload.action}`,
  );
}

async function actOnPullRequestDelivery(
  deps: ScannerDeps,
  news: PullRequestNews,
  deliveryId: string,
  what = 'issue_comment',
): Promise<Answer> {
  const delivery = await claimDelivery(deps, deliveryId);
  if (!delivery) return { status: 200, body: { ignored: `delivery ${deliveryId} was received before` } };
  try {
    // As polling does: a closed pull request is not acted on.
    const pull = await deps.github.for(news.repository)!.issue(news.repository, news.number);
    if (pull.state === 'closed') return { status: 202, body: { ignored: 'the pull request is closed' } };
    await actOnPullRequest(deps, news, continueOnIssue);
  } catch (err) {
    // Not acted on: a redelivery of it must be (polling is the safety net if Redis is away).
    await delivery.release().catch(() => {});
    throw err;
  }
  return { status: 202, body: { accepted: what } };
}
