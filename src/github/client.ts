import { createAppAuth } from '@octokit/auth-app';
import { retry } from '@octokit/plugin-retry';
import { throttling } from '@octokit/plugin-throttling';
import { Octokit } from '@octokit/rest';
import type { Metrics } from '../metrics.js';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import type { Logger } from '../log.js';
import { reviewCommentSchema, reviewSchema, type GitHubReview, type GitHubReviewComment } from './schemas.js';
import {
  commentSchema,
  compareSchema,
  isBot,
  issueSchema,
  permissionSchema,
  pullRequestSchema,
  reactionSchema,
  repositorySchema,
  userSchema,
  type GitHubComment,
  type GitHubCompare,
  type GitHubIssue,
  type GitHubPullRequest,
  type GitHubRepository,
} from './schemas.js';

/** Octokit with GitHub's rate limits and transient failures waited out (see octokitPolicies). */
export const ThrottledOctokit = Octokit.plugin(throttling, retry);

/** How long a cached response (for conditional requests) is kept. */
const ETAG_TTL_S = 7 * 86_400;
const RETRIES_ON_LIMIT = 3;

/**
 * How the hub's Octokits behave: quiet (their messages go to debug), 5xx and dropped connections
 * retried, rate limits (primary and secondary) waited out a few times, GitHub's refusals not retried.
 */
export function octokitPolicies(log: Logger) {
  const onLimit =
    (what: string) =>
    (retryAfter: number, options: { method: string; url: string }, _o: unknown, count: number) => {
      log.warn({ retryAfter, url: options.url }, what);
      return count < RETRIES_ON_LIMIT;
    };
  return {
    log: {
      debug: () => {},
      info: () => {},
      warn: (m: string) => log.debug(m),
      error: (m: string) => log.debug(m),
    },
    retry: { doNotRetry: [304, 400, 401, 403, 404, 410, 422, 451] },
    throttle: {
      onRateLimit: onLimit('GitHub rate limit reached'),
      onSecondaryRateLimit: onLimit('GitHub secondary rate limit'),
    },
  };
}

/**
 * GitHub's REST API for one token: the hub's real client (Octokit) for github.com, GitHub
 * Enterprise, or the test server, by base URL. Every GET is conditional: the ETag and body of the
 * last answer are kept in Redis (shared by every hub), and a 304 — which GitHub does not count
 * against the rate limit — is answered from there, so polling an idle repository is free.
 * Secondary rate limits and 5xx are waited out by Octokit's throttling and retry plugins.
 */
export class GitHubClient {
  readonly octokit: InstanceType<typeof ThrottledOctokit>;

  constructor(opts: {
    baseUrl: string;
    /** A PAT; or `app`, an installation of a GitHub App, whose tokens @octokit/auth-app renews. */
    token?: string;
    app?: {
      appId: string;
      installationId: number;
      createJwt: (
        appId: string | number,
        timeDifference?: number,
      ) => Promise<{ jwt: string; expiresAt: string }>;
    };
    /** Who this client writes as, when GitHub cannot say (an App's bot: `GET /user` is 403 to it). */
    login?: () => Promise<string>;
    redis: Redis;
    prefix: string;
    log: Logger;
    /** Counts requests and keeps the remaining rate limit, labelled with `repository`. */
    metrics?: Metrics;
    repository?: string;
  }) {
    const { redis, prefix, log } = opts;
    this.octokit = new ThrottledOctokit({
      baseUrl: opts.baseUrl.replace(/\/+$/, ''),
      ...(opts.app ? { authStrategy: createAppAuth, auth: opts.app } : { auth: opts.token }),
      userAgent: 'thopter-swarm',
      ...octokitPolicies(log),
    });

    const { metrics } = opts;
    if (metrics) {
      const repository = opts.repository ?? '';
      const count = (status: number | undefined, headers: Record<string, unknown> | undefined) => {
        metrics.inc('thopter_github_requests_total', { repository, status: status ?? 'network' });
        const remaining = Number(headers?.['x-ratelimit-remaining']);
        if (headers?.['x-ratelimit-remaining'] !== undefined && Number.isFinite(remaining)) {
          metrics.gauge('thopter_github_rate_limit_remaining', { repository }, remaining);
        }
      };
      this.octokit.hook.after('request', (response) => count(response.status, response.headers));
      this.octokit.hook.error('request', (err) => {
        const e = err as { status?: number; response?: { headers?: Record<string, unknown> } };
        count(e.status, e.response?.headers);
        throw err;
      });
    }

    if (opts.app) {
      // A cached installation token GitHub no longer takes (revoked, or older than the cache
      // thinks): get a new one once, then try again.
      this.octokit.hook.wrap('request', async (request, options) => {
        try {
          return await request(options);
        } catch (err) {
          if ((err as { status?: number }).status !== 401 || /^\/app(\/|$)/.test(options.url)) throw err;
          await this.octokit.auth({ type: 'installation', refresh: true });
          return request(options);
        }
      });
    }
    this.loginOverride = opts.login;

    this.octokit.hook.wrap('request', async (request, options) => {
      if (options.method !== 'GET') return request(options);
      const { url } = this.octokit.request.endpoint.parse(options);
      const key = `${prefix}:github:etag:${url}`;
      const cached = await redis.get(key);
      const entry = cached ? (JSON.parse(cached) as { etag: string; link?: string; data: unknown }) : null;
      if (entry) options.headers = { ...options.headers, 'if-none-match': entry.etag };
      try {
        const response = await request(options);
        const etag = response.headers.etag;
        if (etag) {
          const link = response.headers.link;
          await redis.set(key, JSON.stringify({ etag, link, data: response.data }), 'EX', ETAG_TTL_S);
        }
        return response;
      } catch (err) {
        if (entry && (err as { status?: number }).status === 304) {
          const headers = (err as { response?: { headers: Record<string, string> } }).response?.headers ?? {};
          return { status: 200, url, headers: { ...headers, link: entry.link }, data: entry.data } as never;
        }
        throw err;
      }
    });
  }

  private self?: Promise<string | null>;
  private readonly loginOverride?: () => Promise<string>;

  /**
   * The login this token writes as, asked once; null for a GitHub App's installation token, which
   * GitHub refuses `GET /user` (403) and whose comments are its bot's.
   */
  login(): Promise<string | null> {
    if (this.loginOverride) {
      this.self ??= this.loginOverride().catch((err: unknown) => {
        this.self = undefined;
        throw err;
      });
      return this.self;
    }
    this.self ??= this.octokit.rest.users.getAuthenticated().then(
      ({ data }) => userSchema.parse(data).login,
      (err: unknown) => {
        if ((err as { status?: number }).status === 403) return null;
        this.self = undefined;
        throw err;
      },
    );
    return this.self;
  }

  /**
   * Whether this token wrote `comment`: the hub's markers count only there, since anyone who may
   * comment could copy one into a comment of theirs.
   */
  async wrote(comment: GitHubComment): Promise<boolean> {
    if (!comment.user) return false;
    const login = await this.login();
    return login === null ? isBot(comment.user) : comment.user.login === login;
  }

  async repository(fullName: string): Promise<GitHubRepository> {
    const [owner, repo] = split(fullName);
    const { data } = await this.octokit.rest.repos.get({ owner, repo });
    return repositorySchema.parse(data);
  }

  /** Open issues (and pull requests) updated at or after `since`, oldest change first, every page. */
  /** Open and closed issues (closing one is news too: its thopters end). */
  async issuesSince(fullName: string, since: string): Promise<GitHubIssue[]> {
    const [owner, repo] = split(fullName);
    const data = await this.octokit.paginate(this.octokit.rest.issues.listForRepo, {
      owner,
      repo,
      state: 'all',
      since,
      sort: 'updated',
      direction: 'asc',
      per_page: 100,
    });
    return z.array(issueSchema).parse(data);
  }

  async issue(fullName: string, number: number): Promise<GitHubIssue> {
    const [owner, repo] = split(fullName);
    const { data } = await this.octokit.rest.issues.get({ owner, repo, issue_number: number });
    return issueSchema.parse(data);
  }

  /** Every comment of an issue, every page. */
  async comments(fullName: string, number: number): Promise<GitHubComment[]> {
    const [owner, repo] = split(fullName);
    const data = await this.octokit.paginate(this.octokit.rest.issues.listComments, {
      owner,
      repo,
      issue_number: number,
      per_page: 100,
    });
    return z.array(commentSchema).parse(data);
  }

  async pullRequest(fullName: string, number: number): Promise<GitHubPullRequest> {
    const [owner, repo] = split(fullName);
    const { data } = await this.octokit.rest.pulls.get({ owner, repo, pull_number: number });
    return pullRequestSchema.parse(data);
  }

  /** Every review of a pull request, oldest first, every page. */
  async reviews(fullName: string, number: number): Promise<GitHubReview[]> {
    const [owner, repo] = split(fullName);
    const data = await this.octokit.paginate(this.octokit.rest.pulls.listReviews, {
      owner,
      repo,
      pull_number: number,
      per_page: 100,
    });
    return z.array(reviewSchema).parse(data);
  }

  /** Every review comment of a pull request, oldest first, every page. */
  async reviewComments(fullName: string, number: number): Promise<GitHubReviewComment[]> {
    const [owner, repo] = split(fullName);
    const data = await this.octokit.paginate(this.octokit.rest.pulls.listReviewComments, {
      owner,
      repo,
      pull_number: number,
      per_page: 100,
    });
    return z.array(reviewCommentSchema).parse(data);
  }

  /** `admin`, `write`, `read` or `none` (maintainers read as `write`, triage as `read`). */
  async permission(fullName: string, login: string): Promise<string> {
    const [owner, repo] = split(fullName);
    const { data } = await this.octokit.rest.repos.getCollaboratorPermissionLevel({
      owner,
      repo,
      username: login,
    });
    return permissionSchema.parse(data).permission;
  }

  async createComment(fullName: string, number: number, body: string): Promise<number> {
    const [owner, repo] = split(fullName);
    const { data } = await this.octokit.rest.issues.createComment({
      owner,
      repo,
      issue_number: number,
      body,
    });
    return commentSchema.parse(data).id;
  }

  async updateComment(fullName: string, commentId: number, body: string): Promise<void> {
    const [owner, repo] = split(fullName);
    await this.octokit.rest.issues.updateComment({ owner, repo, comment_id: commentId, body });
  }

  /** What `head` has that `base` lacks (three-dot compare); null when either branch does not exist. */
  async compare(fullName: string, base: string, head: string): Promise<GitHubCompare | null> {
    const [owner, repo] = split(fullName);
    try {
      const { data } = await this.octokit.rest.repos.compareCommitsWithBasehead({
        owner,
        repo,
        basehead: `${base}...${head}`,
      });
      return compareSchema.parse(data);
    } catch (err) {
      if ((err as { status?: number }).status === 404) return null;
      throw err;
    }
  }

  /** Pull requests from `head` (a branch of this repository), every page. */
  async pullRequests(
    fullName: string,
    head: string,
    state: 'open' | 'closed' | 'all' = 'open',
  ): Promise<GitHubPullRequest[]> {
    const [owner, repo] = split(fullName);
    const data = await this.octokit.paginate(this.octokit.rest.pulls.list, {
      owner,
      repo,
      // GitHub filters by `user:ref-name`; a bare branch name would be ignored and list them all.
      head: `${owner}:${head}`,
      state,
      per_page: 100,
    });
    return z.array(pullRequestSchema).parse(data);
  }

  async react(
    fullName: string,
    on: ReactionTarget,
    content: ReactionContent,
  ): Promise<'created' | 'existed'> {
    const [owner, repo] = split(fullName);
    const { status } =
      'commentId' in on
        ? await this.octokit.rest.reactions.createForIssueComment({
            owner,
            repo,
            comment_id: on.commentId,
            content,
          })
        : await this.octokit.rest.reactions.createForIssue({
            owner,
            repo,
            issue_number: on.issueNumber,
            content,
          });
    return status === 201 ? 'created' : 'existed';
  }

  async reacted(fullName: string, on: ReactionTarget, content: ReactionContent): Promise<boolean> {
    const [owner, repo] = split(fullName);
    const data =
      'commentId' in on
        ? await this.octokit.paginate(this.octokit.rest.reactions.listForIssueComment, {
            owner,
            repo,
            comment_id: on.commentId,
            content,
            per_page: 100,
          })
        : await this.octokit.paginate(this.octokit.rest.reactions.listForIssue, {
            owner,
            repo,
            issue_number: on.issueNumber,
            content,
            per_page: 100,
          });
    const login = await this.login();
    return z
      .array(reactionSchema)
      .parse(data)
      .some((r) => r.content === content && (login === null ? isBot(r.user) : r.user?.login === login));
  }

  async createPullRequest(
    fullName: string,
    pr: { title: string; head: string; base: string; body: string; draft: boolean },
  ): Promise<GitHubPullRequest> {
    const [owner, repo] = split(fullName);
    const { data } = await this.octokit.rest.pulls.create({ owner, repo, ...pr });
    return pullRequestSchema.parse(data);
  }
}

/** What a reaction is on: a comment, or an issue itself (a command in its body). */
export type ReactionTarget = { commentId: number } | { issueNumber: number };

/** GitHub's reaction contents. */
export type ReactionContent = '+1' | '-1' | 'laugh' | 'confused' | 'heart' | 'hooray' | 'rocket' | 'eyes';

function split(fullName: string): [string, string] {
  const [owner, repo] = fullName.split('/');
  if (!owner || !repo) throw new Error(`"${fullName}" is not owner/repo`);
  return [owner, repo];
}
