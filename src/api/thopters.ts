import { createHash } from 'node:crypto';
import { Router } from '@koa/router';
import { PRIORITY, type HubQueues } from '../queues/index.js';
import { acceptLaunch, labelOf, type IntakeDeps } from '../scanner/intake.js';
import { statusPostSchema } from '../status/schema.js';
import { isFinal, type ThopterState } from '../thopters/record.js';
import { hashToken, type ThopterStore } from '../thopters/store.js';
import type { Intake } from '../scanner/pause.js';
import { toIssueComments } from '../scanner/github.js';
import { CONTINUE_PROMPT, continuationOf } from '../scanner/continue.js';
import type { GitHubClients } from '../github/clients.js';
import { credentialOf } from './auth.js';
import { HttpError, parseWith, readJson } from './http.js';
import {
  destroyQuerySchema,
  launchSchema,
  listQuerySchema,
  thopterIdSchema,
  type LaunchBody,
} from './schemas.js';
import { thopterView } from './views.js';
import { DEFAULT_PRICES, type PriceTable } from '../usage/prices.js';

export interface ThopterRoutesDeps extends IntakeDeps {
  store: ThopterStore;
  queues: HubQueues;
  intake: Intake;
  github: GitHubClients;
}

/**
 * `continues`: the ended thopter named, checked the way `/thopter continue` checks it, with what
 * the new thopter takes from it (its branch, golden claude, and the continue prompt).
 */
async function continuedBy(deps: ThopterRoutesDeps, body: LaunchBody) {
  const id = body.continues!;
  const ended = await deps.store.get(id);
  if (!ended) throw new HttpError(404, 'not-found', `continues: there is no thopter ${id}`, 'continues');
  if (!isFinal(ended.state)) {
    throw new HttpError(
      409,
      'conflict',
      `continues: thopter ${id} is still ${ended.state}: a second agent on its branch would fight it; DELETE it first`,
      'continues',
    );
  }
  if (!ended.machine?.workBranch) {
    throw new HttpError(
      422,
      'bad-input',
      `continues: thopter ${id} ended before it had a machine, so it has no work branch to continue`,
      'continues',
    );
  }
  // A live thopter already on its branch is found when the new one is created, atomically
  // (ThopterStore.create): a 409 naming it.
  if (ended.request.repository !== body.repository.trim()) {
    throw new HttpError(
      422,
      'bad-input',
      `continues: thopter ${id} worked on ${ended.request.repository}, not ${body.repository.trim()}: give that repository`,
      'continues',
    );
  }
  return {
    continuation: continuationOf(ended),
    gc: ended.request.gc,
    prompt: (await deps.prompts.resolve(CONTINUE_PROMPT)) ?? ended.request.prompt,
  };
}

/** `{repository, issueNumber}`: the issue's full context and clone URL, read from GitHub. */
async function readIssue(github: GitHubClients, repository: string, number: number) {
  const client = github.for(repository);
  if (!client) {
    throw new HttpError(
      422,
      'bad-input',
      `repository: ${repository} is not in GITHUB_INTEGRATION_JSON with an issuesPAT${github.app ? " nor among the GitHub App's installed repositories (install the App on it)" : ''}, so its issue cannot be read; give title and body instead`,
      'repository',
    );
  }
  let issue;
  try {
    issue = await client.issue(repository, number);
  } catch (err) {
    if ((err as { status?: number }).status === 404) {
      throw new HttpError(
        404,
        'not-found',
        `issueNumber: ${repository} has no issue #${number}`,
        'issueNumber',
      );
    }
    throw err;
  }
  const [repo, comments] = await Promise.all([
    client.repository(repository),
    client.comments(repository, number),
  ]);
  return {
    cloneUrl: repo.clone_url,
    issue: {
      number,
      title: issue.title,
      body: issue.body ?? '',
      url: issue.html_url,
      author: issue.user?.login,
      comments: toIssueComments(comments),
    },
  };
}

async function watchedCloneUrl(github: GitHubClients, repository: string): Promise<string | undefined> {
  const client = github.for(repository);
  if (!client) return undefined;
  try {
    return (await client.repository(repository)).clone_url;
  } catch (err) {
    throw new HttpError(
      502,
      'github',
      `repository: ${repository} could not be read from GitHub (${(err as Error).message}); check its issuesPAT`,
      'repository',
    );
  }
}

/** JSON with its keys sorted at every depth: the same request always gives the same text. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined);
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

/** What an Idempotency-Key is held to: the body as parsed, so key order and spacing do not count. */
const requestHash = (body: LaunchBody) => createHash('sha256').update(canonicalJson(body)).digest('hex');

/** Routes behind HUB_API_TOKEN: launch, list, inspect, destroy. */
export function thopterRoutes(deps: ThopterRoutesDeps): Router {
  const { store, queues } = deps;
  const router = new Router({ sensitive: true, strict: true });

  const load = async (rawId: string) => {
    const id = parseWith(thopterIdSchema, rawId);
    const record = await store.get(id);
    if (!record) throw new HttpError(404, 'not-found', `there is no thopter ${id}`);
    return record;
  };

  router.post('/api/thopters', async (ctx) => {
    const body = parseWith(launchSchema, await readJson(ctx));
    if (body.title === undefined && body.issueNumber === undefined) {
      throw new HttpError(
        400,
        'bad-input',
        'title: give an issueNumber, or the task as title and body',
        'title',
      );
    }
    const intake = await deps.intake.state();
    if (intake.paused) {
      throw new HttpError(
        503,
        'paused',
        `intake is paused since ${intake.since}: resume it with POST /api/intake/resume`,
      );
    }
    const key = ctx.get('idempotency-key');
    if (key && !/^[\w.:-]{1,200}$/.test(key)) {
      throw new HttpError(
        400,
        'bad-input',
        'Idempotency-Key: use up to 200 letters, digits, and . : - _',
        'Idempotency-Key',
      );
    }
    const continues = body.continues ? await continuedBy(deps, body) : undefined;
    const given = body.title !== undefined;
    const fromGitHub = given ? undefined : await readIssue(deps.github, body.repository, body.issueNumber!);
    const accepted = await acceptLaunch(deps, {
      source: 'api',
      repository: body.repository,
      // A watched repository is cloned from its API object's clone_url, so GitHub Enterprise
      // works like github.com also when the task is given as title and body.
      cloneUrl: fromGitHub?.cloneUrl ?? (await watchedCloneUrl(deps.github, body.repository)),
      issue: fromGitHub?.issue ?? {
        number: body.issueNumber,
        title: body.title!,
        body: body.body ?? '',
        url: body.url,
        comments: body.comments ?? [],
      },
      gc: body.gc ?? (continues ? continues.gc : undefined),
      prompt: body.prompt ?? (continues ? continues.prompt : undefined),
      priority: body.priority ?? PRIORITY.launch,
      ...(continues ? { continues: continues.continuation } : {}),
      requestedBy: 'api',
      dedupeKey: key ? `api:${key}` : undefined,
      requestHash: key ? requestHash(body) : undefined,
    });
    ctx.status = accepted.created ? 202 : 200;
    ctx.set('Location', `/api/thopters/${accepted.record.id}`);
    ctx.body = {
      id: accepted.record.id,
      state: accepted.record.state,
      queuePosition: accepted.queuePosition,
    };
  });

  router.get('/api/thopters', async (ctx) => {
    const q = parseWith(listQuerySchema, ctx.query);
    const states = q.state?.split(',') as ThopterState[] | undefined;
    const records = await store.list({ limit: q.limit ?? 1000, states });
    const views = await Promise.all(
      records.map(async (r) =>
        thopterView(r, { queuePosition: r.state === 'queued' ? await queues.queuePosition(r.id) : null }),
      ),
    );
    ctx.body = { thopters: views };
  });

  router.get('/api/thopters/:id', async (ctx) => {
    const record = await load(ctx.params.id!);
    ctx.body = thopterView(record, {
      queuePosition: record.state === 'queued' ? await queues.queuePosition(record.id) : null,
      events: await store.events(record.id),
    });
  });

  router.delete('/api/thopters/:id', async (ctx) => {
    const query = parseWith(destroyQuerySchema, ctx.query);
    const record = await load(ctx.params.id!);
    if (!isFinal(record.state)) {
      await queues.enqueue('destroy', {
        thopterId: record.id,
        label: labelOf(record.request),
        // The dashboard's Kill button calls this route with its session: say who asked.
        reason: ctx.state.auth === 'session' ? 'killed from the dashboard' : 'destroyed through the API',
        ...(query.save === 'false' ? { save: false } : {}),
      });
    }
    ctx.status = 202;
    ctx.body = { id: record.id, state: isFinal(record.state) ? record.state : 'stopping' };
  });

  // Pausing intake stops new launches (API and issues); destroys and running thopters carry on.
  router.get('/api/intake', async (ctx) => {
    ctx.body = await deps.intake.state();
  });
  router.post('/api/intake/pause', async (ctx) => {
    ctx.body = await deps.intake.pause('api');
  });
  router.post('/api/intake/resume', async (ctx) => {
    ctx.body = await deps.intake.resume();
  });

  return router;
}

/**
 * Status tokens seen to match, so the check before the body costs the observer's steady stream of
 * posts no Redis round trip. The write checks the token again: an entry grants nothing by itself.
 */
class KnownTokens {
  private readonly seen = new Set<string>();

  /** @param max entries kept; the oldest goes first. */
  constructor(private readonly max = 10_000) {}

  has(key: string) {
    return this.seen.has(key);
  }

  add(key: string) {
    if (this.seen.size >= this.max) this.seen.delete(this.seen.values().next().value!);
    this.seen.add(key);
  }

  delete(key: string) {
    this.seen.delete(key);
  }
}

/** POST /api/thopters/:id/status: the observer's posts, authenticated by that thopter's own token. */
export function statusRoutes(deps: { store: ThopterStore; prices?: PriceTable }): Router {
  const router = new Router({ sensitive: true, strict: true });
  const known = new KnownTokens();
  router.post('/api/thopters/:id/status', async (ctx) => {
    const id = parseWith(thopterIdSchema, ctx.params.id);
    const token = credentialOf(ctx);
    // One answer for "no such thopter" and "wrong token": a forged post learns nothing, not even
    // what is wrong with its body.
    const refused = () =>
      new HttpError(401, 'unauthorized', "send Authorization: Bearer <this thopter's status token>");
    if (!token) throw refused();
    // Checked before the body is read: a forged post costs no memory.
    const key = `${id}:${hashToken(token)}`;
    if (!known.has(key)) {
      if (!(await deps.store.tokenMatches(id, token))) throw refused();
      known.add(key);
    }
    ctx.state.auth = 'thopter';
    const post = parseWith(statusPostSchema, await readJson(ctx));
    if (post.thopterId !== id) {
      throw new HttpError(400, 'bad-input', `thopterId: must be ${id}, the thopter in the path`, 'thopterId');
    }
    // The write checks the token itself, in the same round trip. Each round trip wakes the hub's
    // event loop once more, which is most of what a post costs (bench/status-ingest.ts).
    const written = await deps.store.setSession(
      id,
      {
        state: post.tmuxState,
        agentRunning: post.claudeProcess === 'running',
        lastActivity: post.lastActivity,
        idleSince: post.idleSince,
        screen: post.screenDump,
        updatedAt: new Date().toISOString(),
        source: 'observer',
        ...(post.turnsEnded !== undefined || post.lastTurnStartedAt
          ? {
              turns: {
                count: post.turnsEnded ?? 0,
                lastEndedAt: post.lastTurnEndedAt,
                lastStartedAt: post.lastTurnStartedAt,
              },
            }
          : {}),
      },
      {
        token,
        ...(post.usage ? { usage: { totals: post.usage, prices: deps.prices ?? DEFAULT_PRICES } } : {}),
      },
    );
    if (written === 'unauthorized') {
      known.delete(key);
      throw refused();
    }
    // A final `stopped` post after the thopter ended is fine: it is simply not recorded.
    ctx.status = written === 'recorded' ? 204 : 202;
  });
  return router;
}
