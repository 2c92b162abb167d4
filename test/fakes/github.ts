/**
 * A fake GitHub REST API for tests: a real HTTP server on 127.0.0.1 that answers the few endpoints
 * the hub uses in GitHub's own wire format, so the hub's Octokit client runs unchanged against it
 * (`baseUrl: fake.url`). Response bodies are typed against Octokit's types, which are generated
 * from GitHub's OpenAPI description, so a field the real API sends and the fake forgets fails
 * `tsc` rather than a test.
 *
 * Behaviour modelled on GitHub's documentation (docs.github.com, REST API version 2022-11-28):
 * - Pagination ("Using pagination in the REST API"): 30 results a page by default, `per_page` at
 *   most 100, and a `link` header with absolute URLs for rel="prev", "next", "last", "first",
 *   keeping the request's other query parameters and written in the `/repositories/{id}/…` form
 *   GitHub uses; no `link` header when everything fits on one page. `/repositories/{id}/…` paths
 *   are served too, since clients follow those links.
 * - Issues ("REST API endpoints for issues"): the list holds pull requests as well (marked by a
 *   `pull_request` key) and shares their numbering; `state` open|closed|all (default open),
 *   `sort` created|updated|comments (default created), `direction` (default desc), and `since`,
 *   "only issues updated at or after this time". Comments are listed by ascending id with the
 *   same `since`; creating one bumps the issue's `updated_at` and `comments`. Timestamps are
 *   whole-second ISO 8601 (`YYYY-MM-DDTHH:MM:SSZ`), so events in one second share a timestamp.
 * - Conditional requests ("Best practices for using the REST API"): every GET answers with a
 *   weak `etag` derived from its body; a matching `if-none-match` gets `304 Not Modified`, no
 *   body, and costs no rate limit.
 * - Rate limits ("Rate limits for the REST API"): `x-ratelimit-limit`, `-remaining`, `-used`,
 *   `-reset` (UTC epoch seconds) and `-resource` on every response; 5,000 an hour per token and
 *   60 without one, in hourly windows; `GET /rate_limit` costs nothing. Past the limit: 403 (or
 *   429) with `x-ratelimit-remaining: 0` and GitHub's "API rate limit exceeded" message. A
 *   secondary limit (403 or 429, "You have exceeded a secondary rate limit", `retry-after`) is
 *   injected with {@link secondaryRateLimit}; its message is what Octokit's throttling plugin
 *   looks for.
 * - Errors ("Troubleshooting the REST API"): bodies `{message, documentation_url, status}`; 401
 *   "Bad credentials" for an unknown token; 404, not 403, for a private repository the caller
 *   may not see; 404 for a trailing slash; 400 "Problems parsing JSON" / "Body should be a JSON
 *   object"; 422 for a missing or ill-typed parameter.
 * - Fine-grained tokens and GitHub App installation tokens restricted to some repositories: a
 *   private repository outside the selection is 404; a public one stays readable and a write to
 *   it is 403 "Resource not accessible by personal access token" (or "… by integration").
 *   `GET /user` with an installation token (type 'Bot') is 403 "Resource not accessible by
 *   integration", as GitHub answers.
 * - "Get repository permissions for a user": `permission` holds only the legacy base roles admin,
 *   write, read, none ("maintain" reads as write, "triage" as read) while `role_name` names the
 *   role; a caller without push access gets 403 "Must have push access to view collaborator
 *   permission." Someone with no role reads as `read` on a public repository, `none` on a private
 *   one; the owner of a user-owned repository is admin.
 * - Webhooks ("Webhook events and payloads", "Validating webhook deliveries"): deliveries are a
 *   POST of the JSON payload with `X-GitHub-Event`, `X-GitHub-Delivery` (a GUID),
 *   `X-Hub-Signature-256: sha256=<HMAC-SHA256 hex of the body>` (and the legacy SHA-1
 *   `X-Hub-Signature`) when a secret is set, and a `GitHub-Hookshot/` user agent; `issues`
 *   (opened, edited with `changes.{title,body}.from`, closed, reopened) and `issue_comment`
 *   (created, edited with `changes.body.from`, deleted) payloads carry action, issue, comment,
 *   repository and sender.
 * - Comment bodies longer than 65,536 characters are refused with 422, as GitHub does.
 * - Pull requests ("REST API endpoints for pull requests") and compare ("Compare two commits"):
 *   branches and commits are read with real git from the repository's bare directory
 *   (`RepoOptions.gitDir`, default an absolute `cloneUrl`). A pull request is an issue too (same
 *   numbering, listed with a `pull_request` key). Create takes title, head, base, body, draft and
 *   answers 201; it refuses with 422 "Validation Failed" a head or base that does not exist
 *   (`errors: [{resource: 'PullRequest', field, code: 'invalid'}]`), a second open one for the
 *   same head and base ("A pull request already exists for owner:branch.") and a head with
 *   nothing the base lacks ("No commits between base and head"), both `code: 'custom'`. The list
 *   filters by `state` (default open), `head` as `user:ref-name` (a value without the user is
 *   ignored, as GitHub does) and `base`, sorted by creation, newest first. Update changes title,
 *   body, state and base; `draft` cannot be changed through REST. Compare takes
 *   `{base}...{head}` (branch or `owner:branch`), 404 when either is unknown, and counts against
 *   the merge base: `ahead_by`, `behind_by`, `status`, `commits`, `files` with additions and
 *   deletions.
 * - GitHub Apps ("Generating a JSON Web Token (JWT) for a GitHub App", "Create an installation
 *   access token for an app", "Revoke an installation access token"): a JWT in `Authorization:
 *   Bearer` is checked with the App's public key (RS256, `iss` the App ID, `exp` in the future and
 *   at most 10 minutes after `iat`, `iat` at most 60 s ahead of the fake's clock) and reaches only
 *   the `/app` endpoints, which answer a token with 401 "A JSON web token could not be decoded".
 *   `GET /app`, `GET /app/installations`, `POST /app/installations/{id}/access_tokens` with
 *   `repositories` (names in the installation's account) and `permissions`: a repository outside
 *   the installation is 422 "There is at least one repository that does not exist or is not
 *   accessible to the parent installation.", a permission beyond the App's 422 "The permissions
 *   requested are not granted to this installation.". Tokens (`ghs_…`, type Bot `{slug}[bot]`)
 *   expire an hour later on the fake's clock ({@link FakeGitHub.advanceClock}; every answer's
 *   `date` is that clock), reach only what their installation still reaches, write only with the
 *   permission for it (403 "Resource not accessible by integration"), and stop working after
 *   `DELETE /installation/token` (204). `GET /installation/repositories` lists what a token
 *   reaches as `{total_count, repositories}`. {@link FakeGitHub.gitAccess} answers for a git
 *   server (test/helpers/git-http.ts) with the same rules, `contents` deciding fetch and push.
 * - Pull request reviews ("REST API endpoints for pull request reviews", "… for pull request review
 *   comments"): create takes `event` APPROVE, REQUEST_CHANGES or COMMENT (none leaves the review
 *   PENDING, seen only by its author), `body` (required for REQUEST_CHANGES and COMMENT: 422
 *   otherwise), and `comments` [{path, line, body}] on the head's version of the file (422 "Path
 *   could not be resolved" / "Line could not be resolved"); approving or requesting changes on
 *   one's own pull request is 422. Reviews list in chronological order; review comments list per
 *   pull request, per review and per repository (`GET /pulls/comments`) with `since`, `sort`
 *   created|updated and `direction` (ignored without `sort`). A submitted review bumps the pull
 *   request's `updated_at`. `pull_request_review` (submitted) and `pull_request_review_comment`
 *   (created) webhooks carry review or comment, pull_request, repository and sender.
 *
 * Choices where GitHub documents nothing: an exhausted token gets its rate-limit error even for a
 * conditional request; injected faults and 401s cost no rate limit; editing a comment leaves its
 * issue's `updated_at` alone (option `commentEditTouchesIssue`); 502–504 faults answer with an
 * HTML page as GitHub's edge does, not JSON; any login is taken to be an existing user.
 *
 * Not modelled: other endpoints (creating issues, reactions, labels, git data), GraphQL,
 * `last-modified`/`if-modified-since`, media types (`body_html`…), search and other rate-limit
 * resources, secondary limits that trigger by themselves, the 10-second server timeout, redirects
 * for renamed repositories, token scopes beyond repository selection.
 */
import { execFileSync } from 'node:child_process';
import { createHash, createHmac, createVerify, randomBytes, randomUUID, type KeyObject } from 'node:crypto';
import { isAbsolute } from 'node:path';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RestEndpointMethodTypes } from '@octokit/rest';

type Rest = RestEndpointMethodTypes;
/** An issue or pull request as `GET /repos/{owner}/{repo}/issues/{number}` answers it. */
export type GitHubIssue = Rest['issues']['get']['response']['data'];
/** An issue comment as `GET /repos/{owner}/{repo}/issues/comments/{id}` answers it. */
export type GitHubComment = Rest['issues']['getComment']['response']['data'];
export type GitHubUser = NonNullable<GitHubIssue['user']>;
export type GitHubPermissionLevel = Rest['repos']['getCollaboratorPermissionLevel']['response']['data'];
export type GitHubRateLimit = Rest['rateLimit']['get']['response']['data'];
type FullRepository = Rest['repos']['get']['response']['data'];
type FullPullRequest = Rest['pulls']['get']['response']['data'];
/** A branch end of a pull request (`head`, `base`), without the repository object GitHub nests in it. */
export type GitHubPullRequestRef = Pick<FullPullRequest['head'], 'label' | 'ref' | 'sha'>;
/** The fields of a pull request the fake sends. */
export type GitHubPullRequest = Pick<
  FullPullRequest,
  | 'url'
  | 'id'
  | 'node_id'
  | 'html_url'
  | 'diff_url'
  | 'patch_url'
  | 'issue_url'
  | 'number'
  | 'state'
  | 'locked'
  | 'title'
  | 'user'
  | 'body'
  | 'created_at'
  | 'updated_at'
  | 'closed_at'
  | 'merged_at'
  | 'draft'
  | 'author_association'
> & { head: GitHubPullRequestRef; base: GitHubPullRequestRef };
type FullCompare = Rest['repos']['compareCommitsWithBasehead']['response']['data'];
/** `GET /repos/{owner}/{repo}/compare/{basehead}` as the fake answers it. */
export type GitHubCompare = Pick<
  FullCompare,
  | 'url'
  | 'html_url'
  | 'permalink_url'
  | 'diff_url'
  | 'patch_url'
  | 'status'
  | 'ahead_by'
  | 'behind_by'
  | 'total_commits'
> & {
  commits: Array<{ sha: string; commit: { message: string } }>;
  files: Array<
    Pick<
      NonNullable<FullCompare['files']>[number],
      'sha' | 'filename' | 'status' | 'additions' | 'deletions' | 'changes'
    >
  >;
};
/** The fields of `GET /repos/{owner}/{repo}` the fake sends (GitHub sends about eighty more). */
export type GitHubRepository = Pick<
  FullRepository,
  | 'id'
  | 'node_id'
  | 'name'
  | 'full_name'
  | 'owner'
  | 'private'
  | 'visibility'
  | 'html_url'
  | 'description'
  | 'fork'
  | 'url'
  | 'issues_url'
  | 'comments_url'
  | 'clone_url'
  | 'git_url'
  | 'ssh_url'
  | 'default_branch'
  | 'archived'
  | 'disabled'
  | 'has_issues'
  | 'open_issues_count'
  | 'created_at'
  | 'updated_at'
  | 'pushed_at'
> &
  Partial<Pick<FullRepository, 'permissions'>>;
/** A pull request review, as `GET /repos/{owner}/{repo}/pulls/{n}/reviews` lists it. */
export type GitHubReview = Rest['pulls']['getReview']['response']['data'];
/** A review comment (a comment on a line of a pull request's diff), as the pulls comments endpoints list it. */
export type GitHubReviewComment = Rest['pulls']['getReviewComment']['response']['data'];
/** `event` of "Create a review for a pull request"; none leaves the review PENDING. */
export type ReviewEvent = 'APPROVE' | 'REQUEST_CHANGES' | 'COMMENT';

/** A repository role, as set by {@link FakeGitHub.setPermission} and reported in `role_name`. */
export type RepositoryRole = 'admin' | 'maintain' | 'write' | 'triage' | 'read' | 'none';
type UserType = 'User' | 'Bot' | 'Organization';
type Timestamp = Date | string | number;

export interface FakeGitHubOptions {
  /** Clock for timestamps and rate-limit windows, in epoch milliseconds. Default `Date.now`. */
  now?: () => number;
  /** Requests an hour for a token. Default 5000, GitHub's limit for a user. */
  rateLimit?: number;
  /** Requests an hour without a token. Default 60, as on GitHub. */
  anonymousRateLimit?: number;
  /** Status for an exhausted primary rate limit; GitHub documents "403 or 429". Default 403. */
  rateLimitStatus?: 403 | 429;
  /** Base of the `html_url` links (the web UI, not the API). Default `https://github.com`. */
  htmlUrl?: string;
  /** Whether editing a comment also bumps its issue's `updated_at`; undocumented. Default false. */
  commentEditTouchesIssue?: boolean;
}

export interface TokenOptions {
  /** 'Bot' for a GitHub App installation token. Default: 'Bot' for a login ending in `[bot]`. */
  type?: 'User' | 'Bot';
  /** Restricts the token to these `owner/repo` (a fine-grained PAT or an installation). */
  repositories?: string[];
  /** Requests an hour for this token. Default: the server's `rateLimit`. */
  rateLimit?: number;
}

export interface RepoOptions {
  /** What `clone_url` says: a bare repository's path or a file:// URL. Default `${url}/git/{owner}/{repo}.git`. */
  cloneUrl?: string;
  private?: boolean;
  defaultBranch?: string;
  /** Default 'User'; the owner of a user-owned repository is its admin. */
  ownerType?: 'User' | 'Organization';
  /**
   * A bare repository on this machine holding the repository's branches: compare and pull
   * requests read it with real git. Default: `cloneUrl` when it is an absolute path.
   */
  gitDir?: string;
}

export interface NewIssue {
  title: string;
  body?: string | null;
  /** Author's login; a login ending in `[bot]` is a Bot. */
  user: string;
  /** Makes it a pull request (it then appears in the issue list with a `pull_request` key). */
  pullRequest?: boolean | { draft?: boolean; mergedAt?: Timestamp };
  labels?: string[];
  createdAt?: Timestamp;
  /** Default: `createdAt`. */
  updatedAt?: Timestamp;
}

export interface NewComment {
  body: string;
  user: string;
  createdAt?: Timestamp;
}

export interface RateLimitState {
  limit: number;
  used: number;
  remaining: number;
  /** UTC epoch seconds when the window resets. */
  reset: number;
}

/** One request the fake answered, for assertions. The token never appears, only whether one was sent. */
export interface RecordedRequest {
  method: string;
  /** Path as requested, e.g. `/repositories/1/issues`. */
  path: string;
  /** The same path in `/repos/{owner}/{repo}/…` form. */
  canonicalPath: string;
  query: Record<string, string>;
  /** 0 while in flight, and for a connection the fake reset. */
  status: number;
  /** Request headers; `authorization` is `true` when one was sent, never its value. */
  headers: Record<string, string | boolean>;
  /** The token's login, or null without a (valid) token. */
  login: string | null;
  /** What the request cost against the primary rate limit: 0 or 1. */
  cost: number;
  /** Parsed JSON body of a POST or PATCH. */
  body?: unknown;
}

export interface RequestInfo {
  method: string;
  path: string;
  canonicalPath: string;
  query: Record<string, string>;
  headers: IncomingMessage['headers'];
}

/** `'GET /repos/acme/app/issues'`, `'POST /repos/*\/*\/issues/{n}/comments'`, a path alone (any method), a RegExp on the path, or a predicate. `*` and `{name}` match within one path segment, `**` across segments. */
export type RequestMatch = string | RegExp | ((req: RequestInfo) => boolean);

export interface FaultSpec {
  /** Answer with this status instead of serving the request. Omit to only delay it. */
  status?: number;
  /** How many matching requests it applies to. Default 1; `Infinity` for all. */
  times?: number;
  /** JSON body (or raw text). Default: GitHub's body for the status. */
  body?: unknown;
  headers?: Record<string, string>;
  /** Wait this long before answering (or serving) the request. */
  delayMs?: number;
  /** Destroy the connection instead of answering (a network error for the client). */
  resetConnection?: boolean;
  /**
   * Serve the request first (what it creates or changes is made), then answer with the fault:
   * a response lost on its way back.
   */
  afterServing?: boolean;
}

export interface FaultHandle {
  /** Requests it has applied to so far. */
  readonly hits: number;
  /** Further requests it will apply to. */
  readonly remaining: number;
  cancel(): void;
}

export interface WebhookEvent {
  /** The `X-GitHub-Event` header: `issues`, `issue_comment`. */
  event: string;
  payload: Record<string, unknown>;
}

const DOCS = 'https://docs.github.com/rest';
const SECONDARY_DOCS =
  'https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits';
const RATE_LIMIT_DOCS = 'https://docs.github.com/rest/overview/rate-limits-for-the-rest-api';
const MAX_COMMENT = 65_536;
const ROLE_RANK: Record<RepositoryRole, number> = {
  none: 0,
  read: 1,
  triage: 2,
  write: 3,
  maintain: 4,
  admin: 5,
};
/** The legacy base role reported in `permission`. */
const BASE_ROLE: Record<RepositoryRole, 'admin' | 'write' | 'read' | 'none'> = {
  admin: 'admin',
  maintain: 'write',
  write: 'write',
  triage: 'read',
  read: 'read',
  none: 'none',
};

interface UserState {
  login: string;
  id: number;
  type: UserType;
}

interface RepoState {
  id: number;
  owner: UserState;
  name: string;
  private: boolean;
  cloneUrl: string | undefined;
  defaultBranch: string;
  createdAt: number;
  roles: Map<string, RepositoryRole>;
  issues: Map<number, IssueState>;
  nextNumber: number;
  gitDir: string | undefined;
  /** Pull requests by number; each also has its issue (GitHub numbers them together). */
  pulls: Map<number, PullState>;
}

interface PullState {
  id: number;
  issue: IssueState;
  /** Branch names in this repository (forks are not modelled). */
  head: string;
  base: string;
  draft: boolean;
  /** Oldest first, PENDING ones included (only their author sees those). */
  reviews: ReviewState[];
  reviewComments: ReviewCommentState[];
}

interface ReviewState {
  id: number;
  user: UserState;
  body: string;
  state: 'PENDING' | 'APPROVED' | 'CHANGES_REQUESTED' | 'COMMENTED';
  /** Null while PENDING. */
  submittedAt: number | null;
  commitId: string;
}

interface ReviewCommentState {
  id: number;
  reviewId: number;
  pull: PullState;
  repo: RepoState;
  user: UserState;
  body: string;
  path: string;
  line: number;
  commitId: string;
  createdAt: number;
  updatedAt: number;
}

interface IssueState {
  id: number;
  reactions?: ReactionState[];
  number: number;
  title: string;
  body: string | null;
  user: UserState;
  state: 'open' | 'closed';
  stateReason: 'completed' | 'not_planned' | 'reopened' | null;
  labels: string[];
  pullRequest: { draft: boolean; mergedAt: number | null } | null;
  createdAt: number;
  updatedAt: number;
  closedAt: number | null;
  closedBy: UserState | null;
  comments: CommentState[];
  /** Before the last edit, for an `edited` webhook's `changes`. */
  previous: { title?: string; body?: string };
  lastActor: UserState;
}

/** One account's reaction; GitHub keeps one per account and content on a comment or issue. */
interface ReactionState {
  id: number;
  user: UserState;
  content: string;
  createdAt: number;
}

/** The contents GitHub accepts for a reaction, in its documentation's order. */
const REACTION_CONTENTS = ['+1', '-1', 'laugh', 'confused', 'heart', 'hooray', 'rocket', 'eyes'];

interface CommentState {
  id: number;
  reactions?: ReactionState[];
  body: string;
  user: UserState;
  createdAt: number;
  updatedAt: number;
  issue: IssueState;
  repo: RepoState;
  previousBody: string | undefined;
  lastActor: UserState;
}

interface TokenState {
  user: UserState;
  repositories: Set<string> | null;
  bucket: Bucket;
  /** For an installation token: whose it is, what it may do, and until when (the fake's clock). */
  installation?: {
    state: InstallationState;
    secret: string;
    permissions: Record<string, string>;
    expiresAt: number;
  };
}

interface AppState {
  id: number;
  slug: string;
  publicKey: KeyObject | string;
  permissions: Record<string, 'read' | 'write'>;
  bucket: Bucket;
}

interface InstallationState {
  id: number;
  app: AppState;
  account: UserState;
  /** `owner/repo`, lower case. */
  repositories: Set<string>;
}

/** A GitHub App, for {@link FakeGitHub.addApp}. */
export interface NewApp {
  id: number;
  slug: string;
  /** The public half of the App's key (GitHub keeps only that); JWTs are checked with it. */
  publicKey: KeyObject | string;
  /** What the App may do (default: issues, pull_requests and contents write, metadata read). */
  permissions?: Record<string, 'read' | 'write'>;
}

/** One installation access token the fake issued, for assertions (the token itself included). */
export interface IssuedToken {
  token: string;
  installationId: number;
  /** `owner/repo`, or null for every repository of the installation. */
  repositories: string[] | null;
  permissions: Record<string, string>;
  /** Epoch ms on the fake's clock. */
  expiresAt: number;
  revoked: boolean;
}

interface Bucket {
  limit: number;
  used: number;
  /** Epoch seconds; 0 until the first request opens a window. */
  reset: number;
}

interface Fault {
  match: (req: RequestInfo) => boolean;
  spec: FaultSpec;
  remaining: number;
  hits: number;
}

interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
  /** Whether a 200 to this GET may become a 304. */
  conditional?: boolean;
  /** For a text body. Default `text/plain; charset=utf-8`. */
  contentType?: string;
}

type Caller = { kind: 'token'; token: TokenState } | { kind: 'anonymous' };

interface Ctx {
  method: string;
  query: URLSearchParams;
  requestUrl: URL;
  caller: Caller;
  body: unknown;
}

class HttpError extends Error {
  constructor(readonly reply: Reply) {
    super(String((reply.body as { message?: string } | undefined)?.message ?? reply.status));
  }
}

function errorReply(status: number, message: string, documentationUrl = DOCS, extra: object = {}): Reply {
  return { status, body: { message, ...extra, documentation_url: documentationUrl, status: String(status) } };
}

const refuse = (status: number, message: string, documentationUrl?: string, extra?: object): never => {
  throw new HttpError(errorReply(status, message, documentationUrl, extra));
};

/** GitHub's timestamp format: ISO 8601 to the second. */
const iso = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
const toSecond = (ms: number) => Math.floor(ms / 1000) * 1000;
const nodeId = (kind: string, id: number) => Buffer.from(`0${kind.length}:${kind}${id}`).toString('base64');

function toMs(t: Timestamp): number {
  const ms = t instanceof Date ? t.getTime() : typeof t === 'number' ? t : Date.parse(t);
  if (Number.isNaN(ms)) throw new Error(`not a timestamp: ${String(t)}`);
  return toSecond(ms);
}

/** The `X-Hub-Signature-256` GitHub sends for `body` under `secret`. */
export function signWebhook(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body, 'utf8').digest('hex')}`;
}

/**
 * POSTs a webhook delivery to `url` as GitHub does. `payload` may be a string, sent as is (to test
 * a body that does not match its signature, say). Without a secret no signature headers are sent.
 */
export async function deliverWebhook(
  url: string,
  delivery: {
    event: string;
    payload: unknown;
    secret?: string;
    deliveryId?: string;
    headers?: Record<string, string>;
  },
): Promise<Response> {
  const body = typeof delivery.payload === 'string' ? delivery.payload : JSON.stringify(delivery.payload);
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'user-agent': 'GitHub-Hookshot/fake',
    'x-github-event': delivery.event,
    'x-github-delivery': delivery.deliveryId ?? randomUUID(),
    'x-github-hook-id': '1',
  };
  if (delivery.secret !== undefined) {
    headers['x-hub-signature'] =
      `sha1=${createHmac('sha1', delivery.secret).update(body, 'utf8').digest('hex')}`;
    headers['x-hub-signature-256'] = signWebhook(delivery.secret, body);
  }
  return fetch(url, { method: 'POST', headers: { ...headers, ...delivery.headers }, body });
}

/** A secondary rate limit as GitHub answers it, for {@link FakeGitHub.fail}. */
export function secondaryRateLimit(
  opts: { retryAfter?: number; status?: 403 | 429; times?: number } = {},
): FaultSpec {
  const status = opts.status ?? 403;
  return {
    status,
    times: opts.times ?? 1,
    headers: opts.retryAfter === undefined ? {} : { 'retry-after': String(opts.retryAfter) },
    body: {
      message:
        'You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID FAKE:0000.',
      documentation_url: SECONDARY_DOCS,
      status: String(status),
    },
  };
}

/** Starts a fake GitHub REST API on 127.0.0.1 at a free port. */
export async function startFakeGitHub(options: FakeGitHubOptions = {}): Promise<FakeGitHub> {
  const fake = new FakeGitHub(options);
  await fake.listen();
  return fake;
}

export class FakeGitHub {
  /** Base URL without a trailing slash: Octokit's `baseUrl`. */
  url = '';
  /** Every request answered (or in flight), oldest first. */
  readonly requests: RecordedRequest[] = [];

  private readonly server: Server;
  private readonly now: () => number;
  private readonly opts: Required<Omit<FakeGitHubOptions, 'now'>>;
  private readonly users = new Map<string, UserState>();
  private readonly repos = new Map<string, RepoState>();
  private readonly reposById = new Map<number, RepoState>();
  private readonly commentsById = new Map<number, CommentState>();
  private readonly reviewCommentsById = new Map<number, ReviewCommentState>();
  private readonly tokens = new Map<string, TokenState>();
  private readonly anonymous: Bucket;
  private faults: Fault[] = [];
  private readonly apps = new Map<number, AppState>();
  private readonly installations = new Map<number, InstallationState>();
  /** Every installation token issued, oldest first: what tests look at. */
  readonly issuedTokens: IssuedToken[] = [];
  private clockOffsetMs = 0;
  private readonly pending = new Set<() => void>();
  private closed = false;
  private nextId = {
    user: 1,
    repo: 1_296_269,
    issue: 1_000_001,
    comment: 2_000_000_001,
    reaction: 3_000_001,
    review: 80_000_001,
    reviewComment: 3_000_000_001,
  };

  constructor(options: FakeGitHubOptions = {}) {
    const base = options.now ?? Date.now;
    this.now = () => base() + this.clockOffsetMs;
    this.opts = {
      rateLimit: options.rateLimit ?? 5000,
      anonymousRateLimit: options.anonymousRateLimit ?? 60,
      rateLimitStatus: options.rateLimitStatus ?? 403,
      htmlUrl: (options.htmlUrl ?? 'https://github.com').replace(/\/+$/, ''),
      commentEditTouchesIssue: options.commentEditTouchesIssue ?? false,
    };
    this.anonymous = { limit: this.opts.anonymousRateLimit, used: 0, reset: 0 };
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(`fake GitHub failed: ${String(err)}`);
      });
    });
  }

  /** @internal Use {@link startFakeGitHub}. */
  async listen(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve());
    });
    const { port } = this.server.address() as AddressInfo;
    this.url = `http://127.0.0.1:${port}`;
  }

  /** Stops the server, ending delayed requests and closing kept-alive connections. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const wake of this.pending) wake();
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  // ---- state for tests ------------------------------------------------------------------------

  /** Registers a token for `login`; `Authorization: token …` or `Bearer …` then acts as that user. */
  addToken(token: string, login: string, opts: TokenOptions = {}): GitHubUser {
    const user = this.user(login, opts.type);
    const repositories = opts.repositories ? new Set(opts.repositories.map((r) => r.toLowerCase())) : null;
    this.tokens.set(token, {
      user,
      repositories,
      bucket: { limit: opts.rateLimit ?? this.opts.rateLimit, used: 0, reset: 0 },
    });
    return this.userJson(user);
  }

  addRepo(fullName: string, opts: RepoOptions = {}): GitHubRepository {
    const [ownerLogin, name] = splitFullName(fullName);
    if (this.repos.has(fullName.toLowerCase())) throw new Error(`${fullName} exists already`);
    const repo: RepoState = {
      id: this.nextId.repo++,
      owner: this.user(ownerLogin, opts.ownerType ?? 'User'),
      name,
      private: opts.private ?? false,
      cloneUrl: opts.cloneUrl,
      defaultBranch: opts.defaultBranch ?? 'main',
      createdAt: toSecond(this.now()),
      roles: new Map(),
      issues: new Map(),
      nextNumber: 1,
      gitDir: opts.gitDir ?? (opts.cloneUrl && isAbsolute(opts.cloneUrl) ? opts.cloneUrl : undefined),
      pulls: new Map(),
    };
    this.repos.set(fullName.toLowerCase(), repo);
    this.reposById.set(repo.id, repo);
    return this.repoJson(repo);
  }

  /** Adds an issue (or a pull request) by `user`, numbered after the repository's last one. */
  addIssue(fullName: string, issue: NewIssue): GitHubIssue {
    const repo = this.repoOrThrow(fullName);
    const user = this.user(issue.user);
    const createdAt = issue.createdAt === undefined ? toSecond(this.now()) : toMs(issue.createdAt);
    const pr = issue.pullRequest;
    const state: IssueState = {
      id: this.nextId.issue++,
      number: repo.nextNumber++,
      title: issue.title,
      body: issue.body ?? null,
      user,
      state: 'open',
      stateReason: null,
      labels: issue.labels ?? [],
      pullRequest: pr
        ? {
            draft: typeof pr === 'object' && pr.draft === true,
            mergedAt: typeof pr === 'object' && pr.mergedAt !== undefined ? toMs(pr.mergedAt) : null,
          }
        : null,
      createdAt,
      updatedAt: issue.updatedAt === undefined ? createdAt : toMs(issue.updatedAt),
      closedAt: null,
      closedBy: null,
      comments: [],
      previous: {},
      lastActor: user,
    };
    repo.issues.set(state.number, state);
    return this.issueJson(repo, state);
  }

  /** Adds a comment by `user`; the issue's `updated_at` moves to the comment's time. */
  addComment(fullName: string, number: number, comment: NewComment): GitHubComment {
    const repo = this.repoOrThrow(fullName);
    const issue = this.issueOrThrow(repo, number);
    const at = comment.createdAt === undefined ? toSecond(this.now()) : toMs(comment.createdAt);
    return this.commentJson(this.createComment(repo, issue, this.user(comment.user), comment.body, at));
  }

  /** Edits a comment, as its author unless `user` says who. */
  editComment(
    fullName: string,
    commentId: number,
    edit: { body: string; user?: string; at?: Timestamp },
  ): GitHubComment {
    const repo = this.repoOrThrow(fullName);
    const comment = this.commentsById.get(commentId);
    if (!comment || comment.repo !== repo) throw new Error(`${fullName} has no comment ${commentId}`);
    const at = edit.at === undefined ? toSecond(this.now()) : toMs(edit.at);
    this.updateComment(comment, edit.body, edit.user ? this.user(edit.user) : comment.user, at);
    return this.commentJson(comment);
  }

  /** Edits an issue's title or body, keeping the old values for an `edited` webhook's `changes`. */
  editIssue(
    fullName: string,
    number: number,
    edit: { title?: string; body?: string; user?: string; at?: Timestamp },
  ): GitHubIssue {
    const repo = this.repoOrThrow(fullName);
    const issue = this.issueOrThrow(repo, number);
    issue.previous = {};
    if (edit.title !== undefined && edit.title !== issue.title) {
      issue.previous.title = issue.title;
      issue.title = edit.title;
    }
    if (edit.body !== undefined && edit.body !== issue.body) {
      issue.previous.body = issue.body ?? '';
      issue.body = edit.body;
    }
    issue.lastActor = edit.user ? this.user(edit.user) : issue.user;
    issue.updatedAt = edit.at === undefined ? toSecond(this.now()) : toMs(edit.at);
    return this.issueJson(repo, issue);
  }

  closeIssue(
    fullName: string,
    number: number,
    opts: { user?: string; reason?: 'completed' | 'not_planned'; at?: Timestamp } = {},
  ): GitHubIssue {
    const repo = this.repoOrThrow(fullName);
    const issue = this.issueOrThrow(repo, number);
    const at = opts.at === undefined ? toSecond(this.now()) : toMs(opts.at);
    issue.state = 'closed';
    issue.stateReason = opts.reason ?? 'completed';
    issue.closedAt = at;
    issue.updatedAt = at;
    issue.closedBy = opts.user ? this.user(opts.user) : issue.user;
    issue.lastActor = issue.closedBy;
    return this.issueJson(repo, issue);
  }

  reopenIssue(fullName: string, number: number, opts: { user?: string; at?: Timestamp } = {}): GitHubIssue {
    const repo = this.repoOrThrow(fullName);
    const issue = this.issueOrThrow(repo, number);
    issue.state = 'open';
    issue.stateReason = 'reopened';
    issue.closedAt = null;
    issue.updatedAt = opts.at === undefined ? toSecond(this.now()) : toMs(opts.at);
    issue.lastActor = opts.user ? this.user(opts.user) : issue.user;
    return this.issueJson(repo, issue);
  }

  /** Gives `login` a role on the repository ('none' takes it away). */
  setPermission(fullName: string, login: string, role: RepositoryRole): void {
    const repo = this.repoOrThrow(fullName);
    this.user(login);
    repo.roles.set(login.toLowerCase(), role);
  }

  /** The repository's pull requests, oldest first, as `GET /repos/{o}/{r}/pulls/{n}` answers each. */
  pullRequests(fullName: string): GitHubPullRequest[] {
    const repo = this.repoOrThrow(fullName);
    return [...repo.pulls.values()].map((p) => this.pullJson(repo, p));
  }

  repo(fullName: string): GitHubRepository {
    return this.repoJson(this.repoOrThrow(fullName));
  }

  issue(fullName: string, number: number): GitHubIssue {
    const repo = this.repoOrThrow(fullName);
    return this.issueJson(repo, this.issueOrThrow(repo, number));
  }

  /** An issue's comments, oldest first: what the hub posted, for assertions. */
  comments(fullName: string, number: number): GitHubComment[] {
    const repo = this.repoOrThrow(fullName);
    return this.issueOrThrow(repo, number).comments.map((c) => this.commentJson(c));
  }

  /** The reactions on a comment, or on an issue itself, oldest first: `{ login, content }`. */
  reactions(
    fullName: string,
    on: { commentId: number } | { issueNumber: number },
  ): Array<{ login: string; content: string }> {
    const repo = this.repoOrThrow(fullName);
    const target =
      'commentId' in on ? this.commentsById.get(on.commentId) : this.issueOrThrow(repo, on.issueNumber);
    if (!target) throw new Error(`${fullName} has no comment ${(on as { commentId: number }).commentId}`);
    return (target.reactions ?? []).map((r) => ({ login: r.user.login, content: r.content }));
  }

  // ---- GitHub Apps ----------------------------------------------------------------------------

  /** Registers a GitHub App: JWTs signed with its private key authenticate as it. */
  addApp(app: NewApp): void {
    this.apps.set(app.id, {
      id: app.id,
      slug: app.slug,
      publicKey: app.publicKey,
      permissions: app.permissions ?? {
        issues: 'write',
        pull_requests: 'write',
        contents: 'write',
        metadata: 'read',
      },
      bucket: { limit: this.opts.rateLimit, used: 0, reset: 0 },
    });
    this.user(`${app.slug}[bot]`, 'Bot');
  }

  /** Installs an App on an account for some of its repositories; returns the installation id. */
  installApp(appId: number, account: string, repositories: string[]): number {
    const app = this.apps.get(appId);
    if (!app) throw new Error(`no App ${appId}: addApp it first`);
    const id = 40_000_000 + this.installations.size + 1;
    this.installations.set(id, {
      id,
      app,
      account: this.user(account),
      repositories: new Set(repositories.map((r) => r.toLowerCase())),
    });
    return id;
  }

  /** Changes which repositories an installation reaches (what the owner does in its settings). */
  setInstallationRepositories(installationId: number, repositories: string[]): void {
    const installation = this.installations.get(installationId);
    if (!installation) throw new Error(`no installation ${installationId}`);
    installation.repositories = new Set(repositories.map((r) => r.toLowerCase()));
  }

  /** Moves the fake's clock (timestamps, rate-limit windows, token and JWT expiry) forward. */
  advanceClock(ms: number): void {
    this.clockOffsetMs += ms;
  }

  /** Whether `token` authenticates now (not expired on the fake's clock, not revoked). */
  tokenWorks(token: string): boolean {
    return this.authenticate(`token ${token}`) !== 'bad';
  }

  /**
   * Whether `token` may fetch (or, with `push`, push to) `fullName` over git: what GitHub's git
   * server decides with the same token. An installation token needs its repository selected and
   * `contents` (write to push); a user's token needs to see the repository (write to push).
   */
  gitAccess(token: string, fullName: string, push: boolean): boolean {
    const auth = this.authenticate(`token ${token}`);
    const repo = this.repos.get(fullName.toLowerCase());
    if (auth === 'bad' || auth.kind !== 'token' || !repo) return false;
    const { token: state } = auth;
    if (!this.selected(state, repo)) return false;
    if (state.installation) {
      const contents = state.installation.permissions.contents;
      return push ? contents === 'write' : contents === 'write' || contents === 'read';
    }
    const rank = ROLE_RANK[this.roleOf(repo, state.user)];
    return push ? rank >= ROLE_RANK.write : this.canSee(auth, repo);
  }

  // ---- rate limits, faults, the request log ---------------------------------------------------

  /** A token's primary rate limit now (no token: the anonymous one). */
  rateLimit(token?: string): RateLimitState {
    const bucket = this.bucketOf(token);
    this.refresh(bucket);
    return {
      limit: bucket.limit,
      used: bucket.used,
      remaining: bucket.limit - bucket.used,
      reset: bucket.reset,
    };
  }

  /** Sets a token's remaining requests or window, e.g. `{remaining: 0}` to exhaust it. */
  setRateLimit(
    token: string | undefined,
    state: { limit?: number; remaining?: number; reset?: Timestamp },
  ): void {
    const bucket = this.bucketOf(token);
    this.refresh(bucket);
    if (state.limit !== undefined) bucket.limit = state.limit;
    if (state.remaining !== undefined) bucket.used = Math.max(0, bucket.limit - state.remaining);
    if (state.reset !== undefined) bucket.reset = Math.floor(toMs(state.reset) / 1000);
  }

  /** Answers the next `spec.times` (default 1) matching requests with `spec` instead of serving them. */
  fail(match: RequestMatch, spec: FaultSpec): FaultHandle {
    const fault: Fault = { match: matcher(match), spec, remaining: spec.times ?? 1, hits: 0 };
    this.faults.push(fault);
    return {
      get hits() {
        return fault.hits;
      },
      get remaining() {
        return fault.remaining;
      },
      cancel: () => {
        this.faults = this.faults.filter((f) => f !== fault);
      },
    };
  }

  /** Delays the next `times` (default 1) matching requests by `ms`, then serves them. */
  delay(match: RequestMatch, ms: number, times = 1): FaultHandle {
    return this.fail(match, { delayMs: ms, times });
  }

  clearFaults(): void {
    this.faults = [];
  }

  clearRequests(): void {
    this.requests.length = 0;
  }

  // ---- webhook payloads -----------------------------------------------------------------------

  /** An `issues` webhook for the issue as it is now. `sender` defaults to whoever acted last. */
  issuesEvent(
    fullName: string,
    number: number,
    action: 'opened' | 'edited' | 'closed' | 'reopened',
    opts: { sender?: string } = {},
  ): WebhookEvent {
    const repo = this.repoOrThrow(fullName);
    const issue = this.issueOrThrow(repo, number);
    const sender = opts.sender ? this.user(opts.sender) : action === 'opened' ? issue.user : issue.lastActor;
    const payload: Record<string, unknown> = { action, issue: this.issueJson(repo, issue) };
    if (action === 'edited') {
      const changes: Record<string, { from: string }> = {};
      if (issue.previous.title !== undefined) changes.title = { from: issue.previous.title };
      if (issue.previous.body !== undefined) changes.body = { from: issue.previous.body };
      payload.changes = changes;
    }
    Object.assign(payload, { repository: this.repoJson(repo), sender: this.userJson(sender) });
    return { event: 'issues', payload };
  }

  /** An `issue_comment` webhook for the comment as it is now. */
  issueCommentEvent(
    fullName: string,
    commentId: number,
    action: 'created' | 'edited' | 'deleted',
    opts: { sender?: string } = {},
  ): WebhookEvent {
    const repo = this.repoOrThrow(fullName);
    const comment = this.commentsById.get(commentId);
    if (!comment || comment.repo !== repo) throw new Error(`${fullName} has no comment ${commentId}`);
    const sender = opts.sender
      ? this.user(opts.sender)
      : action === 'created'
        ? comment.user
        : comment.lastActor;
    const payload: Record<string, unknown> = { action };
    if (action === 'edited') payload.changes = { body: { from: comment.previousBody ?? comment.body } };
    Object.assign(payload, {
      issue: this.issueJson(repo, comment.issue),
      comment: this.commentJson(comment),
      repository: this.repoJson(repo),
      sender: this.userJson(sender),
    });
    return { event: 'issue_comment', payload };
  }

  /**
   * A `pull_request_review` webhook (action `submitted`) for a review as it is now. Webhooks write
   * the review's state in lower case (`changes_requested`), where the REST API writes
   * `CHANGES_REQUESTED`.
   */
  pullRequestReviewEvent(fullName: string, number: number, reviewId: number): WebhookEvent {
    const repo = this.repoOrThrow(fullName);
    const pull = repo.pulls.get(number);
    const review = pull?.reviews.find((v) => v.id === reviewId);
    if (!pull || !review) throw new Error(`${fullName}#${number} has no review ${reviewId}`);
    const json = this.reviewJson(repo, pull, review);
    return {
      event: 'pull_request_review',
      payload: {
        action: 'submitted',
        review: { ...json, state: json.state.toLowerCase() },
        pull_request: this.pullJson(repo, pull),
        repository: this.repoJson(repo),
        sender: this.userJson(review.user),
      },
    };
  }

  /** A `pull_request_review_comment` webhook (action `created`) for a review comment as it is now. */
  pullRequestReviewCommentEvent(fullName: string, commentId: number): WebhookEvent {
    const repo = this.repoOrThrow(fullName);
    const comment = this.reviewCommentsById.get(commentId);
    if (!comment || comment.repo !== repo) throw new Error(`${fullName} has no review comment ${commentId}`);
    return {
      event: 'pull_request_review_comment',
      payload: {
        action: 'created',
        comment: this.reviewCommentJson(comment),
        pull_request: this.pullJson(repo, comment.pull),
        repository: this.repoJson(repo),
        sender: this.userJson(comment.user),
      },
    };
  }

  // ---- the server -----------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = (req.method ?? 'GET').toUpperCase();
    const requestUrl = new URL(req.url ?? '/', this.url);
    const path = requestUrl.pathname;
    const raw = await readBody(req);
    const headers: Record<string, string | boolean> = {};
    for (const [k, v] of Object.entries(req.headers)) {
      if (k === 'authorization') continue;
      if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
    }
    headers.authorization = req.headers.authorization !== undefined;
    const canonicalPath = this.canonical(path);
    const record: RecordedRequest = {
      method,
      path,
      canonicalPath,
      query: Object.fromEntries(requestUrl.searchParams),
      status: 0,
      headers,
      login: null,
      cost: 0,
    };
    this.requests.push(record);
    const info: RequestInfo = { method, path, canonicalPath, query: record.query, headers: req.headers };

    const fault = this.takeFault(info);
    if (fault?.delayMs) await this.sleep(fault.delayMs);
    if (this.closed) {
      res.destroy();
      return;
    }
    const lost = fault?.afterServing === true;
    if (fault?.resetConnection && !lost) {
      res.destroy();
      return;
    }

    const jwt = this.appOf(req.headers.authorization);
    if (jwt) {
      // A JWT: the App itself, which may use only the /app endpoints.
      const bucket = typeof jwt === 'string' ? this.anonymous : jwt.bucket;
      this.refresh(bucket);
      let reply: Reply;
      if (fault?.status !== undefined && !lost) reply = faultReply(fault);
      else if (typeof jwt === 'string') reply = errorReply(401, jwt);
      else {
        try {
          const body = method === 'POST' ? parseJson(raw) : undefined;
          record.body = body;
          reply = this.routeApp(canonicalPath, method, jwt, body, requestUrl);
        } catch (err) {
          if (!(err instanceof HttpError)) throw err;
          reply = err.reply;
        }
        bucket.used++;
        record.cost = 1;
      }
      if (lost && fault?.status !== undefined) reply = faultReply(fault);
      record.status = reply.status;
      this.send(res, method, reply, bucket);
      return;
    }
    const auth = this.authenticate(req.headers.authorization);
    const caller: Caller | null = auth === 'bad' ? null : auth;
    if (caller?.kind === 'token') record.login = caller.token.user.login;
    const bucket = caller?.kind === 'token' ? caller.token.bucket : this.anonymous;
    this.refresh(bucket);

    let reply: Reply;
    if (fault?.status !== undefined && !lost) reply = faultReply(fault);
    else if (!caller) reply = errorReply(401, 'Bad credentials');
    else {
      const free = canonicalPath === '/rate_limit';
      if (!free && bucket.used >= bucket.limit) reply = this.rateLimited(caller);
      else {
        try {
          let body: unknown;
          if (method === 'POST' || method === 'PATCH' || method === 'PUT') {
            body = parseJson(raw);
            record.body = body;
          }
          reply = this.route(canonicalPath, {
            method,
            query: requestUrl.searchParams,
            requestUrl,
            caller,
            body,
          });
        } catch (err) {
          if (!(err instanceof HttpError)) throw err;
          reply = err.reply;
        }
        if (reply.conditional && reply.status === 200) {
          const etag = `W/"${createHash('sha256').update(JSON.stringify(reply.body)).digest('hex')}"`;
          reply.headers = { ...reply.headers, etag };
          if (etagMatches(req.headers['if-none-match'], etag)) reply = { status: 304, headers: { etag } };
        }
        if (!free && reply.status !== 304) {
          bucket.used++;
          record.cost = 1;
        }
      }
    }
    if (lost && fault?.resetConnection) {
      res.destroy();
      return;
    }
    if (lost && fault?.status !== undefined) reply = faultReply(fault);
    record.status = reply.status;
    this.send(res, method, reply, bucket);
  }

  private send(res: ServerResponse, method: string, reply: Reply, bucket: Bucket): void {
    const headers: Record<string, string> = {
      // GitHub's clock: a client that signs JWTs learns its drift from here.
      date: new Date(this.now()).toUTCString(),
      'cache-control': 'private, max-age=60, s-maxage=60',
      vary: 'Accept, Authorization, Cookie, X-GitHub-OTP',
      'x-github-media-type': 'github.v3; format=json',
      'x-github-api-version-selected': '2022-11-28',
      'x-github-request-id': randomUUID().slice(0, 18).toUpperCase(),
      'x-ratelimit-limit': String(bucket.limit),
      'x-ratelimit-remaining': String(Math.max(0, bucket.limit - bucket.used)),
      'x-ratelimit-reset': String(bucket.reset),
      'x-ratelimit-used': String(bucket.used),
      'x-ratelimit-resource': 'core',
      'access-control-expose-headers':
        'ETag, Link, Location, Retry-After, X-GitHub-OTP, X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Used, X-RateLimit-Resource, X-RateLimit-Reset, X-OAuth-Scopes, X-Accepted-OAuth-Scopes, X-Poll-Interval, X-GitHub-Media-Type, X-GitHub-SSO, X-GitHub-Request-Id, Deprecation, Sunset',
    };
    let text = '';
    if (reply.status !== 304 && reply.body !== undefined) {
      if (typeof reply.body === 'string') {
        headers['content-type'] = reply.contentType ?? 'text/plain; charset=utf-8';
        text = reply.body;
      } else {
        headers['content-type'] = 'application/json; charset=utf-8';
        text = JSON.stringify(reply.body);
      }
    }
    Object.assign(headers, reply.headers);
    res.writeHead(reply.status, headers);
    res.end(method === 'HEAD' ? undefined : text);
  }

  private route(path: string, ctx: Ctx): Reply {
    const { method } = ctx;
    const get = method === 'GET' || method === 'HEAD';
    if (path === '/user' && get) return this.getUser(ctx);
    if (path === '/rate_limit' && get) return this.getRateLimit(ctx);
    if (path === '/installation/repositories' && get) return this.installationRepositories(ctx);
    if (path === '/installation/token' && method === 'DELETE') return this.revokeInstallationToken(ctx);
    if (path.startsWith('/app/') || path === '/app') {
      // GitHub wants a JWT here; a token gets this.
      return errorReply(401, 'A JSON web token could not be decoded', `${DOCS}/apps/apps`);
    }
    const m = /^\/repos\/([^/]+)\/([^/]+)(\/.*)?$/.exec(path);
    if (!m) return errorReply(404, 'Not Found');
    const rest = m[3] ?? '';
    const repo = this.repos.get(`${decodeURIComponent(m[1]!)}/${decodeURIComponent(m[2]!)}`.toLowerCase());
    const repoDocs = `${DOCS}/repos/repos#get-a-repository`;
    if (!repo || !this.canSee(ctx.caller, repo)) return errorReply(404, 'Not Found', repoDocs);
    let r: RegExpExecArray | null;
    if (rest === '' && get) return this.ok(this.repoJson(repo, ctx.caller));
    if (rest === '/issues' && get) return this.listIssues(repo, ctx);
    if ((r = /^\/issues\/comments\/(\d+)$/.exec(rest))) {
      const comment = this.commentsById.get(Number(r[1]));
      const docs = `${DOCS}/issues/comments#${get ? 'get' : 'update'}-an-issue-comment`;
      if (!comment || comment.repo !== repo) return errorReply(404, 'Not Found', docs);
      if (get) return this.ok(this.commentJson(comment));
      if (method === 'PATCH') return this.patchComment(repo, comment, ctx);
    }
    if ((r = /^\/issues\/comments\/(\d+)\/reactions$/.exec(rest))) {
      const comment = this.commentsById.get(Number(r[1]));
      const docs = `${DOCS}/reactions/reactions#${get ? 'list' : 'create'}-reactions-for-an-issue-comment`;
      if (!comment || comment.repo !== repo) return errorReply(404, 'Not Found', docs);
      if (get) return this.listReactions(comment, ctx, docs);
      if (method === 'POST') return this.postReaction(repo, comment, ctx, docs);
    }
    if ((r = /^\/issues\/(\d+)\/reactions$/.exec(rest))) {
      const issue = repo.issues.get(Number(r[1]));
      const docs = `${DOCS}/reactions/reactions#${get ? 'list' : 'create'}-reactions-for-an-issue`;
      if (!issue) return errorReply(404, 'Not Found', docs);
      if (get) return this.listReactions(issue, ctx, docs);
      if (method === 'POST') return this.postReaction(repo, issue, ctx, docs);
    }
    if ((r = /^\/issues\/(\d+)(\/comments)?$/.exec(rest))) {
      const issue = repo.issues.get(Number(r[1]));
      const list = r[2] !== undefined;
      const docs = `${DOCS}/issues/${list ? 'comments#list-issue-comments' : 'issues#get-an-issue'}`;
      if (!issue) return errorReply(404, 'Not Found', docs);
      if (!list && get) return this.ok(this.issueJson(repo, issue));
      if (list && get) return this.listComments(repo, issue, ctx);
      if (list && method === 'POST') return this.postComment(repo, issue, ctx);
    }
    if ((r = /^\/compare\/(.+)$/.exec(rest)) && get) return this.compare(repo, decodeURIComponent(r[1]!));
    if (rest === '/pulls' && get) return this.listPulls(repo, ctx);
    if (rest === '/pulls' && method === 'POST') return this.postPull(repo, ctx);
    if ((r = /^\/pulls\/(\d+)$/.exec(rest))) {
      const pull = repo.pulls.get(Number(r[1]));
      const docs = `${DOCS}/pulls/pulls#${get ? 'get' : 'update'}-a-pull-request`;
      if (!pull) return errorReply(404, 'Not Found', docs);
      if (get) return this.ok(this.pullJson(repo, pull));
      if (method === 'PATCH') return this.patchPull(repo, pull, ctx);
    }
    if (rest === '/pulls/comments' && get) return this.listRepoReviewComments(repo, ctx);
    if ((r = /^\/pulls\/(\d+)\/(reviews|comments)(?:\/(\d+)(\/comments)?)?$/.exec(rest))) {
      const pull = repo.pulls.get(Number(r[1]));
      if (!pull) return errorReply(404, 'Not Found', `${DOCS}/pulls/reviews`);
      if (r[2] === 'comments' && r[3] === undefined && get) return this.listReviewComments(repo, pull, ctx);
      if (r[2] === 'reviews' && r[3] === undefined && get) return this.listReviews(repo, pull, ctx);
      if (r[2] === 'reviews' && r[3] === undefined && method === 'POST')
        return this.postReview(repo, pull, ctx);
      if (r[2] === 'reviews' && r[3] !== undefined && get) {
        const review = pull.reviews.find((v) => v.id === Number(r![3]) && this.mayRead(v, ctx.caller));
        if (!review)
          return errorReply(404, 'Not Found', `${DOCS}/pulls/reviews#get-a-review-for-a-pull-request`);
        if (r[4] === undefined) return this.ok(this.reviewJson(repo, pull, review));
        const comments = pull.reviewComments.filter((c) => c.reviewId === review.id);
        return this.paginate(
          comments.map((c) => this.reviewCommentJson(c)),
          ctx,
          `/repositories/${repo.id}/pulls/${pull.issue.number}/reviews/${review.id}/comments`,
        );
      }
    }
    if ((r = /^\/collaborators\/([^/]+)\/permission$/.exec(rest)) && get) {
      return this.getPermission(repo, decodeURIComponent(r[1]!), ctx);
    }
    return errorReply(404, 'Not Found');
  }

  private getUser(ctx: Ctx): Reply {
    const docs = `${DOCS}/users/users#get-the-authenticated-user`;
    if (ctx.caller.kind === 'anonymous') return errorReply(401, 'Requires authentication', docs);
    const { user } = ctx.caller.token;
    if (user.type === 'Bot') return errorReply(403, 'Resource not accessible by integration', docs);
    return this.ok({ ...this.userJson(user), name: null, created_at: iso(0), updated_at: iso(0) });
  }

  private getRateLimit(ctx: Ctx): Reply {
    const bucket = ctx.caller.kind === 'token' ? ctx.caller.token.bucket : this.anonymous;
    const core = {
      limit: bucket.limit,
      used: bucket.used,
      remaining: Math.max(0, bucket.limit - bucket.used),
      reset: bucket.reset,
    };
    const fresh = (limit: number) => ({ limit, used: 0, remaining: limit, reset: bucket.reset });
    const body: GitHubRateLimit = {
      resources: { core, search: fresh(30), graphql: fresh(5000), integration_manifest: fresh(5000) },
      rate: core,
    };
    return this.ok(body);
  }

  private listIssues(repo: RepoState, ctx: Ctx): Reply {
    const q = ctx.query;
    const docs = `${DOCS}/issues/issues#list-repository-issues`;
    const state = oneOf(q.get('state'), ['open', 'closed', 'all'], 'open', 'state', docs);
    const sort = oneOf(q.get('sort'), ['created', 'updated', 'comments'], 'created', 'sort', docs);
    const direction = oneOf(q.get('direction'), ['asc', 'desc'], 'desc', 'direction', docs);
    const since = parseSince(q.get('since'), docs);
    const key = (i: IssueState) =>
      sort === 'updated' ? i.updatedAt : sort === 'comments' ? i.comments.length : i.createdAt;
    const issues = [...repo.issues.values()]
      .filter((i) => state === 'all' || i.state === state)
      .filter((i) => since === null || i.updatedAt >= since)
      .sort((a, b) => (direction === 'asc' ? 1 : -1) * (key(a) - key(b) || a.number - b.number));
    return this.paginate(
      issues.map((i) => this.issueJson(repo, i)),
      ctx,
      `/repositories/${repo.id}/issues`,
    );
  }

  private listComments(repo: RepoState, issue: IssueState, ctx: Ctx): Reply {
    const since = parseSince(ctx.query.get('since'), `${DOCS}/issues/comments#list-issue-comments`);
    const comments = issue.comments.filter((c) => since === null || c.updatedAt >= since);
    return this.paginate(
      comments.map((c) => this.commentJson(c)),
      ctx,
      `/repositories/${repo.id}/issues/${issue.number}/comments`,
    );
  }

  private postComment(repo: RepoState, issue: IssueState, ctx: Ctx): Reply {
    const docs = `${DOCS}/issues/comments#create-an-issue-comment`;
    const user = this.writer(ctx.caller, repo, docs, issue.pullRequest ? 'pull_requests' : 'issues');
    const body = commentBody(ctx.body, docs);
    const comment = this.createComment(repo, issue, user, body, toSecond(this.now()));
    const json = this.commentJson(comment);
    return { status: 201, body: json, headers: { location: json.url } };
  }

  // ---- reactions -------------------------------------------------------------------------------

  /** `?content=` filters to one content; a content GitHub does not know is refused. */
  private listReactions(target: { reactions?: ReactionState[] }, ctx: Ctx, docs: string): Reply {
    const content = ctx.query.get('content');
    if (content !== null && !REACTION_CONTENTS.includes(content)) {
      return errorReply(422, 'Validation Failed', docs, {
        errors: [{ resource: 'Reaction', code: 'invalid', field: 'content', value: content }],
      });
    }
    const reactions = (target.reactions ?? []).filter((x) => content === null || x.content === content);
    return this.paginate(
      reactions.map((x) => this.reactionJson(x)),
      ctx,
      ctx.requestUrl.pathname,
    );
  }

  /**
   * Reading the repository is enough to react (and a token scoped to it); an account reacts once
   * per content: a second POST answers 200 with the reaction that exists, a new one 201.
   */
  private postReaction(
    repo: RepoState,
    target: { reactions?: ReactionState[] },
    ctx: Ctx,
    docs: string,
  ): Reply {
    const user = this.writer(ctx.caller, repo, docs);
    const content = (ctx.body as Record<string, unknown> | undefined)?.content;
    if (content === undefined)
      return errorReply(422, 'Invalid request.\n\n"content" wasn\'t supplied.', docs);
    if (typeof content !== 'string' || !REACTION_CONTENTS.includes(content)) {
      return errorReply(
        422,
        `Invalid request.\n\nFor 'properties/content', ${JSON.stringify(content)} is not one of ${JSON.stringify(REACTION_CONTENTS)}.`,
        docs,
      );
    }
    target.reactions ??= [];
    const existing = target.reactions.find((x) => x.user.id === user.id && x.content === content);
    if (existing) return { status: 200, body: this.reactionJson(existing) };
    const made: ReactionState = {
      id: this.nextId.reaction++,
      user,
      content,
      createdAt: toSecond(this.now()),
    };
    target.reactions.push(made);
    return { status: 201, body: this.reactionJson(made) };
  }

  private reactionJson(x: ReactionState) {
    return {
      id: x.id,
      node_id: nodeId('Reaction', x.id),
      user: this.userJson(x.user),
      content: x.content,
      created_at: iso(x.createdAt),
    };
  }

  private patchComment(repo: RepoState, comment: CommentState, ctx: Ctx): Reply {
    const docs = `${DOCS}/issues/comments#update-an-issue-comment`;
    const user = this.writer(ctx.caller, repo, docs, comment.issue.pullRequest ? 'pull_requests' : 'issues');
    // Someone else's comment needs push access; GitHub hides what the caller may not change.
    if (user.id !== comment.user.id && ROLE_RANK[this.roleOf(repo, user)] < ROLE_RANK.write) {
      refuse(404, 'Not Found', docs);
    }
    this.updateComment(comment, commentBody(ctx.body, docs), user, toSecond(this.now()));
    return this.ok(this.commentJson(comment));
  }

  // ---- compare and pull requests, read from the repository's git directory ---------------------

  /** `git -C gitDir …`'s output, or undefined when it fails (or the repository has no git directory). */
  private git(repo: RepoState, args: string[]): string | undefined {
    if (!repo.gitDir) return undefined;
    try {
      return execFileSync('git', ['-C', repo.gitDir, ...args], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      }).trimEnd();
    } catch {
      return undefined;
    }
  }

  /** A branch of this repository named as `branch` or `owner:branch`, with its commit; forks are not modelled. */
  private branch(repo: RepoState, ref: string): { name: string; sha: string } | undefined {
    const colon = ref.indexOf(':');
    if (colon >= 0 && ref.slice(0, colon).toLowerCase() !== repo.owner.login.toLowerCase()) return undefined;
    const name = colon >= 0 ? ref.slice(colon + 1) : ref;
    if (!name || name.startsWith('-')) return undefined;
    const sha = this.git(repo, ['rev-parse', '--verify', '--quiet', `refs/heads/${name}^{commit}`]);
    return sha ? { name, sha } : undefined;
  }

  /** Commits `head` has that `base` lacks. */
  private aheadBy(repo: RepoState, base: string, head: string): number {
    return Number(this.git(repo, ['rev-list', '--count', `${base}..${head}`]) ?? 0);
  }

  private compare(repo: RepoState, basehead: string): Reply {
    const docs = `${DOCS}/commits/commits#compare-two-commits`;
    const m = /^(.+?)\.\.\.(.+)$/.exec(basehead);
    const base = m ? this.branch(repo, m[1]!) : undefined;
    const head = m ? this.branch(repo, m[2]!) : undefined;
    if (!base || !head) return errorReply(404, 'Not Found', docs);
    const ahead = this.aheadBy(repo, base.sha, head.sha);
    const behind = this.aheadBy(repo, head.sha, base.sha);
    const log = this.git(repo, ['log', '--reverse', '--format=%H%x00%s', `${base.sha}..${head.sha}`]) ?? '';
    const commits = log
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const [sha, message] = line.split('\0');
        return { sha: sha!, commit: { message: message ?? '' } };
      });
    // Three dots: the head against the merge base, as GitHub's compare shows it.
    const range = `${base.sha}...${head.sha}`;
    const statuses = new Map<string, string>();
    for (const line of (this.git(repo, ['diff', '--no-renames', '--name-status', range]) ?? '').split('\n')) {
      const [code, file] = line.split('\t');
      if (code && file) statuses.set(file, code === 'A' ? 'added' : code === 'D' ? 'removed' : 'modified');
    }
    const files: GitHubCompare['files'] = [];
    for (const line of (this.git(repo, ['diff', '--no-renames', '--numstat', range]) ?? '').split('\n')) {
      const [add, del, filename] = line.split('\t');
      if (!filename) continue;
      const additions = add === '-' ? 0 : Number(add);
      const deletions = del === '-' ? 0 : Number(del);
      const status = (statuses.get(filename) ?? 'modified') as GitHubCompare['files'][number]['status'];
      const blob = status === 'removed' ? base.sha : head.sha;
      files.push({
        sha: this.git(repo, ['rev-parse', `${blob}:${filename}`]) ?? '',
        filename,
        status,
        additions,
        deletions,
        changes: additions + deletions,
      });
    }
    const fullName = `${repo.owner.login}/${repo.name}`;
    const html = `${this.opts.htmlUrl}/${fullName}/compare/${basehead}`;
    const body: GitHubCompare = {
      url: `${this.url}/repos/${fullName}/compare/${basehead}`,
      html_url: html,
      permalink_url: `${this.opts.htmlUrl}/${fullName}/compare/${base.sha}...${head.sha}`,
      diff_url: `${html}.diff`,
      patch_url: `${html}.patch`,
      status: ahead && behind ? 'diverged' : ahead ? 'ahead' : behind ? 'behind' : 'identical',
      ahead_by: ahead,
      behind_by: behind,
      total_commits: ahead,
      commits,
      files,
    };
    return this.ok(body);
  }

  private listPulls(repo: RepoState, ctx: Ctx): Reply {
    const q = ctx.query;
    const docs = `${DOCS}/pulls/pulls#list-pull-requests`;
    const state = oneOf(q.get('state'), ['open', 'closed', 'all'], 'open', 'state', docs);
    const sort = oneOf(
      q.get('sort'),
      ['created', 'updated', 'popularity', 'long-running'],
      'created',
      'sort',
      docs,
    );
    const direction = oneOf(
      q.get('direction'),
      ['asc', 'desc'],
      sort === 'created' ? 'desc' : 'asc',
      'direction',
      docs,
    );
    // `head` is `user:ref-name`; GitHub ignores a value without the user.
    const head = q.get('head');
    const headFilter = head?.includes(':') ? head : undefined;
    const base = q.get('base');
    const key = (p: PullState) => (sort === 'updated' ? p.issue.updatedAt : p.issue.createdAt);
    const pulls = [...repo.pulls.values()]
      .filter((p) => state === 'all' || p.issue.state === state)
      .filter(
        (p) =>
          headFilter === undefined ||
          headFilter.toLowerCase() === `${repo.owner.login}:${p.head}`.toLowerCase(),
      )
      .filter((p) => !base || p.base === base)
      .sort((a, b) => (direction === 'asc' ? 1 : -1) * (key(a) - key(b) || a.issue.number - b.issue.number));
    return this.paginate(
      pulls.map((p) => this.pullJson(repo, p)),
      ctx,
      `/repositories/${repo.id}/pulls`,
    );
  }

  private postPull(repo: RepoState, ctx: Ctx): Reply {
    const docs = `${DOCS}/pulls/pulls#create-a-pull-request`;
    const user = this.writer(ctx.caller, repo, docs, 'pull_requests');
    const input = jsonObject(ctx.body);
    for (const field of ['title', 'head', 'base'] as const) {
      if (input[field] === undefined) refuse(422, `Invalid request.\n\n"${field}" wasn't supplied.`, docs);
    }
    for (const field of ['title', 'head', 'base', 'body'] as const) {
      const v = input[field];
      if (v !== undefined && v !== null && typeof v !== 'string') {
        refuse(
          422,
          `Invalid request.\n\nFor 'properties/${field}', ${JSON.stringify(v)} is not a string.`,
          docs,
        );
      }
    }
    if (input.draft !== undefined && typeof input.draft !== 'boolean') {
      refuse(
        422,
        `Invalid request.\n\nFor 'properties/draft', ${JSON.stringify(input.draft)} is not a boolean.`,
        docs,
      );
    }
    const invalid = (field: string) =>
      refuse(422, 'Validation Failed', docs, {
        errors: [{ resource: 'PullRequest', field, code: 'invalid' }],
      });
    const custom = (message: string) =>
      refuse(422, 'Validation Failed', docs, {
        errors: [{ resource: 'PullRequest', code: 'custom', message }],
      });
    const base = this.branch(repo, input.base as string);
    if (!base) return invalid('base');
    const head = this.branch(repo, input.head as string);
    if (!head) return invalid('head');
    const open = [...repo.pulls.values()].find(
      (p) => p.issue.state === 'open' && p.head === head.name && p.base === base.name,
    );
    if (open) return custom(`A pull request already exists for ${repo.owner.login}:${head.name}.`);
    if (this.aheadBy(repo, base.sha, head.sha) === 0)
      return custom(`No commits between ${base.name} and ${head.name}`);
    const at = toSecond(this.now());
    const issue: IssueState = {
      id: this.nextId.issue++,
      number: repo.nextNumber++,
      title: input.title as string,
      body: (input.body as string | null | undefined) ?? null,
      user,
      state: 'open',
      stateReason: null,
      labels: [],
      pullRequest: { draft: input.draft === true, mergedAt: null },
      createdAt: at,
      updatedAt: at,
      closedAt: null,
      closedBy: null,
      comments: [],
      previous: {},
      lastActor: user,
    };
    repo.issues.set(issue.number, issue);
    const pull: PullState = {
      id: issue.id + 500_000_000,
      issue,
      head: head.name,
      base: base.name,
      draft: input.draft === true,
      reviews: [],
      reviewComments: [],
    };
    repo.pulls.set(issue.number, pull);
    const json = this.pullJson(repo, pull);
    return { status: 201, body: json, headers: { location: json.url } };
  }

  private patchPull(repo: RepoState, pull: PullState, ctx: Ctx): Reply {
    const docs = `${DOCS}/pulls/pulls#update-a-pull-request`;
    const user = this.writer(ctx.caller, repo, docs, 'pull_requests');
    const input = jsonObject(ctx.body);
    for (const field of ['title', 'body', 'state', 'base'] as const) {
      const v = input[field];
      if (v !== undefined && v !== null && typeof v !== 'string') {
        refuse(
          422,
          `Invalid request.\n\nFor 'properties/${field}', ${JSON.stringify(v)} is not a string.`,
          docs,
        );
      }
    }
    if (input.state !== undefined && input.state !== 'open' && input.state !== 'closed') {
      refuse(
        422,
        `Invalid request.\n\nFor 'properties/state', ${JSON.stringify(input.state)} is not a member of ["open", "closed"].`,
        docs,
      );
    }
    if (typeof input.base === 'string') {
      const base = this.branch(repo, input.base);
      if (!base) {
        refuse(422, 'Validation Failed', docs, {
          errors: [{ resource: 'PullRequest', field: 'base', code: 'invalid' }],
        });
      }
      pull.base = base!.name;
    }
    const { issue } = pull;
    const at = toSecond(this.now());
    if (typeof input.title === 'string') issue.title = input.title;
    if (input.body !== undefined) issue.body = (input.body as string | null) ?? null;
    if (input.state === 'closed' && issue.state === 'open') {
      issue.state = 'closed';
      issue.closedAt = at;
      issue.closedBy = user;
    } else if (input.state === 'open' && issue.state === 'closed') {
      issue.state = 'open';
      issue.closedAt = null;
    }
    issue.updatedAt = at;
    issue.lastActor = user;
    return this.ok(this.pullJson(repo, pull));
  }

  private pullJson(repo: RepoState, pull: PullState): GitHubPullRequest {
    const fullName = `${repo.owner.login}/${repo.name}`;
    const { issue } = pull;
    const html = `${this.opts.htmlUrl}/${fullName}/pull/${issue.number}`;
    const ref = (name: string): GitHubPullRequestRef => ({
      label: `${repo.owner.login}:${name}`,
      ref: name,
      sha: this.git(repo, ['rev-parse', '--verify', '--quiet', `refs/heads/${name}^{commit}`]) ?? '',
    });
    return {
      url: `${this.url}/repos/${fullName}/pulls/${issue.number}`,
      id: pull.id,
      node_id: nodeId('PullRequest', pull.id),
      html_url: html,
      diff_url: `${html}.diff`,
      patch_url: `${html}.patch`,
      issue_url: `${this.url}/repos/${fullName}/issues/${issue.number}`,
      number: issue.number,
      state: issue.state,
      locked: false,
      title: issue.title,
      user: this.userJson(issue.user),
      body: issue.body,
      created_at: iso(issue.createdAt),
      updated_at: iso(issue.updatedAt),
      closed_at: issue.closedAt === null ? null : iso(issue.closedAt),
      merged_at: null,
      draft: pull.draft,
      author_association: this.association(repo, issue.user),
      head: ref(pull.head),
      base: ref(pull.base),
    };
  }

  // ---- pull request reviews and review comments ------------------------------------------------

  /** A PENDING review is its author's alone until submitted. */
  private mayRead(review: ReviewState, caller: Caller): boolean {
    return review.state !== 'PENDING' || (caller.kind === 'token' && caller.token.user.id === review.user.id);
  }

  private listReviews(repo: RepoState, pull: PullState, ctx: Ctx): Reply {
    const reviews = pull.reviews.filter((v) => this.mayRead(v, ctx.caller));
    return this.paginate(
      reviews.map((v) => this.reviewJson(repo, pull, v)),
      ctx,
      `/repositories/${repo.id}/pulls/${pull.issue.number}/reviews`,
    );
  }

  private postReview(repo: RepoState, pull: PullState, ctx: Ctx): Reply {
    const docs = `${DOCS}/pulls/reviews#create-a-review-for-a-pull-request`;
    const user = this.writer(ctx.caller, repo, docs);
    const input = jsonObject(ctx.body);
    const events: ReviewEvent[] = ['APPROVE', 'REQUEST_CHANGES', 'COMMENT'];
    const event = input.event as ReviewEvent | undefined;
    if (event !== undefined && !events.includes(event)) {
      refuse(
        422,
        `Invalid request.\n\nFor 'properties/event', ${JSON.stringify(event)} is not a member of ["APPROVE", "REQUEST_CHANGES", "COMMENT"].`,
        docs,
      );
    }
    if (input.body !== undefined && input.body !== null && typeof input.body !== 'string') {
      refuse(
        422,
        `Invalid request.\n\nFor 'properties/body', ${JSON.stringify(input.body)} is not a string.`,
        docs,
      );
    }
    const body = (input.body as string | null | undefined) ?? '';
    const unprocessable = (why: string) => refuse(422, 'Unprocessable Entity', docs, { errors: [why] });
    if ((event === 'REQUEST_CHANGES' || event === 'COMMENT') && body.trim() === '') {
      unprocessable(`Body is required when using ${event}`);
    }
    if (user.id === pull.issue.user.id && event === 'REQUEST_CHANGES')
      unprocessable('Review Can not request changes on your own pull request');
    if (user.id === pull.issue.user.id && event === 'APPROVE')
      unprocessable('Review Can not approve your own pull request');
    const commitId = this.branch(repo, pull.head)?.sha ?? '';
    const given = input.comments ?? [];
    if (!Array.isArray(given)) {
      refuse(
        422,
        `Invalid request.\n\nFor 'properties/comments', ${JSON.stringify(given)} is not an array.`,
        docs,
      );
    }
    const lines: Array<{ path: string; line: number; body: string }> = [];
    for (const c of given as unknown[]) {
      const { path, line, body: text } = (c ?? {}) as Record<string, unknown>;
      if (
        typeof path !== 'string' ||
        typeof text !== 'string' ||
        !Number.isInteger(line) ||
        (line as number) < 1
      ) {
        refuse(
          422,
          'Invalid request.\n\n"path", "body" and "line" are required for each of "comments" (a positive "line" on the new side; "position" is not modelled).',
          docs,
        );
      }
      const file = this.git(repo, ['cat-file', '-p', `${commitId}:${path as string}`]);
      if (file === undefined) unprocessable('Path could not be resolved');
      if ((line as number) > file!.split('\n').length) unprocessable('Line could not be resolved');
      lines.push({ path: path as string, line: line as number, body: text as string });
    }
    const at = toSecond(this.now());
    const state: ReviewState['state'] =
      event === undefined
        ? 'PENDING'
        : ({ APPROVE: 'APPROVED', REQUEST_CHANGES: 'CHANGES_REQUESTED', COMMENT: 'COMMENTED' } as const)[
            event
          ];
    const review: ReviewState = {
      id: this.nextId.review++,
      user,
      body,
      state,
      submittedAt: state === 'PENDING' ? null : at,
      commitId,
    };
    pull.reviews.push(review);
    for (const l of lines) {
      const comment: ReviewCommentState = {
        id: this.nextId.reviewComment++,
        reviewId: review.id,
        pull,
        repo,
        user,
        body: l.body,
        path: l.path,
        line: l.line,
        commitId,
        createdAt: at,
        updatedAt: at,
      };
      pull.reviewComments.push(comment);
      this.reviewCommentsById.set(comment.id, comment);
    }
    // A submitted review is activity on the pull request: its issue shows as updated.
    if (state !== 'PENDING') {
      pull.issue.updatedAt = Math.max(pull.issue.updatedAt, at);
      pull.issue.lastActor = user;
    }
    return this.ok(this.reviewJson(repo, pull, review));
  }

  /** Review comments of one pull request, or of the whole repository (`pull` undefined). */
  private listReviewComments(repo: RepoState, pull: PullState | undefined, ctx: Ctx): Reply {
    const q = ctx.query;
    const docs = `${DOCS}/pulls/comments#list-review-comments-${pull ? 'on-a-pull-request' : 'in-a-repository'}`;
    const sort =
      q.get('sort') === null ? null : oneOf(q.get('sort'), ['created', 'updated'], 'created', 'sort', docs);
    const direction = oneOf(q.get('direction'), ['asc', 'desc'], 'asc', 'direction', docs);
    const since = parseSince(q.get('since'), docs);
    const all = pull ? pull.reviewComments : [...repo.pulls.values()].flatMap((p) => p.reviewComments);
    const visible = (c: ReviewCommentState) => {
      const review = c.pull.reviews.find((v) => v.id === c.reviewId);
      return !review || this.mayRead(review, ctx.caller);
    };
    const key = (c: ReviewCommentState) => (sort === 'updated' ? c.updatedAt : c.createdAt);
    const comments = all
      .filter(visible)
      .filter((c) => since === null || c.updatedAt >= since)
      // Without `sort`, `direction` is ignored: oldest first.
      .sort((a, b) => (sort && direction === 'desc' ? -1 : 1) * (key(a) - key(b) || a.id - b.id));
    return this.paginate(
      comments.map((c) => this.reviewCommentJson(c)),
      ctx,
      pull
        ? `/repositories/${repo.id}/pulls/${pull.issue.number}/comments`
        : `/repositories/${repo.id}/pulls/comments`,
    );
  }

  private listRepoReviewComments(repo: RepoState, ctx: Ctx): Reply {
    return this.listReviewComments(repo, undefined, ctx);
  }

  private reviewJson(repo: RepoState, pull: PullState, review: ReviewState): GitHubReview {
    const fullName = `${repo.owner.login}/${repo.name}`;
    const html = `${this.opts.htmlUrl}/${fullName}/pull/${pull.issue.number}#pullrequestreview-${review.id}`;
    const pullUrl = `${this.url}/repos/${fullName}/pulls/${pull.issue.number}`;
    return {
      id: review.id,
      node_id: nodeId('PullRequestReview', review.id),
      user: this.userJson(review.user),
      body: review.body,
      state: review.state,
      html_url: html,
      pull_request_url: pullUrl,
      _links: { html: { href: html }, pull_request: { href: pullUrl } },
      // GitHub leaves `submitted_at` out of a PENDING review.
      ...(review.submittedAt === null ? {} : { submitted_at: iso(review.submittedAt) }),
      commit_id: review.commitId,
      author_association: this.association(repo, review.user),
    };
  }

  private reviewCommentJson(c: ReviewCommentState): GitHubReviewComment {
    const fullName = `${c.repo.owner.login}/${c.repo.name}`;
    const number = c.pull.issue.number;
    const url = `${this.url}/repos/${fullName}/pulls/comments/${c.id}`;
    const html = `${this.opts.htmlUrl}/${fullName}/pull/${number}#discussion_r${c.id}`;
    const pullUrl = `${this.url}/repos/${fullName}/pulls/${number}`;
    return {
      url,
      pull_request_review_id: c.reviewId,
      id: c.id,
      node_id: nodeId('PullRequestReviewComment', c.id),
      diff_hunk: `@@ -${c.line},1 +${c.line},1 @@`,
      path: c.path,
      commit_id: c.commitId,
      original_commit_id: c.commitId,
      user: this.userJson(c.user),
      body: c.body,
      created_at: iso(c.createdAt),
      updated_at: iso(c.updatedAt),
      html_url: html,
      pull_request_url: pullUrl,
      author_association: this.association(c.repo, c.user),
      _links: { self: { href: url }, html: { href: html }, pull_request: { href: pullUrl } },
      start_line: null,
      original_start_line: null,
      start_side: null,
      line: c.line,
      original_line: c.line,
      side: 'RIGHT',
      subject_type: 'line',
    };
  }

  private getPermission(repo: RepoState, login: string, ctx: Ctx): Reply {
    const docs = `${DOCS}/collaborators/collaborators#get-repository-permissions-for-a-user`;
    const { caller } = ctx;
    if (caller.kind === 'anonymous') return errorReply(401, 'Requires authentication', docs);
    const self = caller.token.user;
    if (self.type !== 'Bot' && ROLE_RANK[this.roleOf(repo, self)] < ROLE_RANK.write) {
      return errorReply(403, 'Must have push access to view collaborator permission.', docs);
    }
    const user = this.user(login);
    const role = this.roleOf(repo, user);
    const rank = ROLE_RANK[role];
    const body: GitHubPermissionLevel = {
      permission: BASE_ROLE[role],
      role_name: role,
      user: {
        ...this.userJson(user),
        permissions: {
          admin: rank >= ROLE_RANK.admin,
          maintain: rank >= ROLE_RANK.maintain,
          push: rank >= ROLE_RANK.write,
          triage: rank >= ROLE_RANK.triage,
          pull: rank >= ROLE_RANK.read,
        },
        role_name: role,
      },
    };
    return this.ok(body);
  }

  private ok(body: unknown): Reply {
    return { status: 200, body, conditional: true };
  }

  /** One page of `items` and GitHub's `link` header, with URLs in the `/repositories/{id}` form. */
  private paginate(items: unknown[], ctx: Ctx, linkPath: string): Reply {
    const perPage = clampInt(ctx.query.get('per_page'), 30, 1, 100);
    const page = clampInt(ctx.query.get('page'), 1, 1, Number.MAX_SAFE_INTEGER);
    const last = Math.max(1, Math.ceil(items.length / perPage));
    const reply = this.ok(items.slice((page - 1) * perPage, page * perPage));
    if (last === 1 && page === 1) return reply;
    const link = (p: number, rel: string) => {
      const u = new URL(linkPath, this.url);
      u.search = ctx.requestUrl.search;
      u.searchParams.set('page', String(p));
      return `<${u.href}>; rel="${rel}"`;
    };
    const links: string[] = [];
    if (page > 1) links.push(link(Math.min(page - 1, last), 'prev'));
    if (page < last) links.push(link(page + 1, 'next'), link(last, 'last'));
    if (page > 1) links.push(link(1, 'first'));
    reply.headers = { link: links.join(', ') };
    return reply;
  }

  private rateLimited(caller: Caller): Reply {
    const status = this.opts.rateLimitStatus;
    const message =
      caller.kind === 'token'
        ? `API rate limit exceeded for user ID ${caller.token.user.id}. If you reach out to GitHub Support for help, please include the request ID FAKE:0000 and timestamp ${new Date(this.now()).toISOString()}.`
        : "API rate limit exceeded for 127.0.0.1. (But here's the good news: Authenticated requests get a higher rate limit. Check out the documentation for more details.) If you reach out to GitHub Support for help, please include the request ID FAKE:0000.";
    return errorReply(status, message, RATE_LIMIT_DOCS);
  }

  // ---- GitHub App endpoints -------------------------------------------------------------------

  /**
   * The App a JWT in `Authorization: Bearer` authenticates, GitHub's 401 message when it is refused,
   * or undefined for anything that is not a JWT. Checked as the docs say: RS256 signed with the
   * App's key, `iss` its ID, `exp` in the future and at most 10 minutes after `iat` (GitHub
   * rejects a longer one), `iat` not in the future (its clock allows 60 s of drift).
   */
  private appOf(header: string | undefined): AppState | string | undefined {
    const m = /^bearer\s+(eyJ[\w-]*\.[\w-]+\.[\w-]*)\s*$/i.exec(header ?? '');
    if (!m) return undefined;
    const [head, payload, signature] = m[1]!.split('.') as [string, string, string];
    let claims: { iat?: unknown; exp?: unknown; iss?: unknown };
    let alg: unknown;
    try {
      alg = (JSON.parse(Buffer.from(head, 'base64url').toString('utf8')) as { alg?: unknown }).alg;
      claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as typeof claims;
    } catch {
      return 'A JSON web token could not be decoded';
    }
    const app = this.apps.get(Number(claims.iss));
    if (!app) return `Integration not found`;
    if (alg !== 'RS256') return 'A JSON web token could not be decoded';
    const valid = createVerify('RSA-SHA256')
      .update(`${head}.${payload}`)
      .verify(app.publicKey, Buffer.from(signature, 'base64url'));
    if (!valid) return 'A JSON web token could not be decoded';
    const nowS = Math.floor(this.now() / 1000);
    if (typeof claims.iat !== 'number' || !Number.isInteger(claims.iat) || claims.iat > nowS + 60)
      return "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued.";
    if (typeof claims.exp !== 'number' || claims.exp <= nowS)
      return "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires.";
    if (claims.exp - claims.iat > 600 || claims.exp > nowS + 600)
      return "'Expiration time' claim ('exp') is too far in the future.";
    return app;
  }

  private routeApp(path: string, method: string, app: AppState, body: unknown, requestUrl: URL): Reply {
    const docs = `${DOCS}/apps/apps`;
    if (path === '/app' && method === 'GET') {
      return this.ok({
        id: app.id,
        slug: app.slug,
        name: app.slug,
        owner: null,
        permissions: app.permissions,
        events: [],
      });
    }
    if (path === '/app/installations' && method === 'GET') {
      const mine = [...this.installations.values()].filter((i) => i.app === app);
      const ctx = {
        method,
        query: requestUrl.searchParams,
        requestUrl,
        caller: { kind: 'anonymous' },
        body,
      } as Ctx;
      return this.paginate(
        mine.map((i) => ({
          id: i.id,
          app_id: app.id,
          app_slug: app.slug,
          account: this.userJson(i.account),
          repository_selection: 'selected',
          access_tokens_url: `${this.url}/app/installations/${i.id}/access_tokens`,
          permissions: app.permissions,
          events: [],
          target_type: i.account.type,
        })),
        ctx,
        '/app/installations',
      );
    }
    const m = /^\/app\/installations\/(\d+)\/access_tokens$/.exec(path);
    if (m && method === 'POST') {
      const installation = this.installations.get(Number(m[1]));
      const tokenDocs = `${docs}#create-an-installation-access-token-for-an-app`;
      if (!installation || installation.app !== app) return errorReply(404, 'Not Found', tokenDocs);
      const input = jsonObject(body);
      const owner = installation.account.login.toLowerCase();
      let repositories: string[] | null = null;
      if (input.repositories !== undefined) {
        if (!Array.isArray(input.repositories) || input.repositories.some((r) => typeof r !== 'string'))
          return errorReply(
            422,
            "Invalid request.\n\nFor 'properties/repositories', it is not an array of strings.",
            tokenDocs,
          );
        // Names, not owner/name: GitHub takes the names of the installation account's repositories.
        repositories = (input.repositories as string[]).map((r) => `${owner}/${r.toLowerCase()}`);
        if (repositories.some((r) => !installation.repositories.has(r) || !this.repos.has(r)))
          return errorReply(
            422,
            'There is at least one repository that does not exist or is not accessible to the parent installation.',
            tokenDocs,
          );
      }
      let permissions: Record<string, string> = { ...app.permissions };
      if (input.permissions !== undefined) {
        const asked = jsonObject(input.permissions);
        const rank = (v: unknown) => (v === 'write' ? 2 : v === 'read' ? 1 : 0);
        if (Object.entries(asked).some(([k, v]) => rank(v) === 0 || rank(v) > rank(app.permissions[k])))
          return errorReply(
            422,
            'The permissions requested are not granted to this installation.',
            tokenDocs,
          );
        permissions = { metadata: 'read', ...(asked as Record<string, string>) };
      }
      const token = `ghs_${randomBytes(18).toString('base64url')}`;
      const expiresAt = toSecond(this.now()) + 3_600_000;
      const user = this.user(`${app.slug}[bot]`, 'Bot');
      this.tokens.set(token, {
        user,
        repositories: repositories ? new Set(repositories) : null,
        bucket: { limit: this.opts.rateLimit, used: 0, reset: 0 },
        installation: { state: installation, secret: token, permissions, expiresAt },
      });
      this.issuedTokens.push({
        token,
        installationId: installation.id,
        repositories,
        permissions,
        expiresAt,
        revoked: false,
      });
      return {
        status: 201,
        body: {
          token,
          expires_at: iso(expiresAt),
          permissions,
          repository_selection: repositories ? 'selected' : 'all',
          ...(repositories
            ? { repositories: repositories.map((r) => this.repoJson(this.repos.get(r)!)) }
            : {}),
        },
      };
    }
    return errorReply(404, 'Not Found', docs);
  }

  /** `GET /installation/repositories`: what an installation token reaches, `{total_count, repositories}`. */
  private installationRepositories(ctx: Ctx): Reply {
    const docs = `${DOCS}/apps/installations#list-repositories-accessible-to-the-app-installation`;
    const token = ctx.caller.kind === 'token' ? ctx.caller.token : undefined;
    if (!token?.installation)
      return errorReply(403, 'This endpoint requires you to be authenticated as an installation.', docs);
    const repos = [...this.repos.values()].filter((r) => this.selected(token, r));
    const reply = this.paginate(
      repos.map((r) => this.repoJson(r)),
      ctx,
      '/installation/repositories',
    );
    reply.body = { total_count: repos.length, repository_selection: 'selected', repositories: reply.body };
    return reply;
  }

  /** `DELETE /installation/token`: the token that authenticates it stops working (204). */
  private revokeInstallationToken(ctx: Ctx): Reply {
    const docs = `${DOCS}/apps/installations#revoke-an-installation-access-token`;
    const token = ctx.caller.kind === 'token' ? ctx.caller.token : undefined;
    if (!token?.installation)
      return errorReply(403, 'This endpoint requires you to be authenticated as an installation.', docs);
    this.tokens.delete(token.installation.secret);
    const issued = this.issuedTokens.find((t) => t.token === token.installation!.secret);
    if (issued) issued.revoked = true;
    return { status: 204 };
  }

  // ---- who may do what ------------------------------------------------------------------------

  private authenticate(header: string | undefined): Caller | 'bad' {
    if (header === undefined) return { kind: 'anonymous' };
    const m = /^(token|bearer|basic)\s+(\S+)\s*$/i.exec(header);
    if (!m) return 'bad';
    let secret = m[2]!;
    if (m[1]!.toLowerCase() === 'basic') {
      const decoded = Buffer.from(secret, 'base64').toString('utf8');
      secret = decoded.slice(decoded.indexOf(':') + 1);
    }
    const token = this.tokens.get(secret);
    if (token?.installation && this.now() >= token.installation.expiresAt) return 'bad';
    return token ? { kind: 'token', token } : 'bad';
  }

  private roleOf(repo: RepoState, user: UserState): RepositoryRole {
    const role = repo.roles.get(user.login.toLowerCase());
    if (role !== undefined) return role;
    if (repo.owner.type === 'User' && repo.owner.id === user.id) return 'admin';
    return repo.private ? 'none' : 'read';
  }

  private selected(token: TokenState, repo: RepoState): boolean {
    const name = `${repo.owner.login}/${repo.name}`.toLowerCase();
    // An installation token reaches only what its installation still does, whatever it was minted for.
    if (token.installation && !token.installation.state.repositories.has(name)) return false;
    return !token.repositories || token.repositories.has(name);
  }

  /** Whether the caller may know the repository exists. */
  private canSee(caller: Caller, repo: RepoState): boolean {
    if (!repo.private) return true;
    if (caller.kind === 'anonymous' || !this.selected(caller.token, repo)) return false;
    const { user } = caller.token;
    return user.type === 'Bot' || ROLE_RANK[this.roleOf(repo, user)] >= ROLE_RANK.read;
  }

  /** The user a write acts as, or the error GitHub answers a caller who may not write. */
  private writer(caller: Caller, repo: RepoState, docs: string, permission?: string): UserState {
    if (caller.kind === 'anonymous') return refuse(401, 'Requires authentication', docs);
    const { user } = caller.token;
    const granted = caller.token.installation?.permissions;
    if (!this.selected(caller.token, repo) || (granted && permission && granted[permission] !== 'write')) {
      const by = user.type === 'Bot' ? 'integration' : 'personal access token';
      return refuse(403, `Resource not accessible by ${by}`, docs);
    }
    return user;
  }

  // ---- state --------------------------------------------------------------------------------

  private user(login: string, type?: UserType): UserState {
    const key = login.toLowerCase();
    let user = this.users.get(key);
    if (!user) {
      user = { login, id: this.nextId.user++, type: type ?? (login.endsWith('[bot]') ? 'Bot' : 'User') };
      this.users.set(key, user);
    } else if (type && type !== user.type) {
      user.type = type;
    }
    return user;
  }

  private repoOrThrow(fullName: string): RepoState {
    const repo = this.repos.get(fullName.toLowerCase());
    if (!repo) throw new Error(`no repository ${fullName}: addRepo it first`);
    return repo;
  }

  private issueOrThrow(repo: RepoState, number: number): IssueState {
    const issue = repo.issues.get(number);
    if (!issue) throw new Error(`${repo.owner.login}/${repo.name} has no issue #${number}`);
    return issue;
  }

  private createComment(repo: RepoState, issue: IssueState, user: UserState, body: string, at: number) {
    const comment: CommentState = {
      id: this.nextId.comment++,
      body,
      user,
      createdAt: at,
      updatedAt: at,
      issue,
      repo,
      previousBody: undefined,
      lastActor: user,
    };
    issue.comments.push(comment);
    issue.updatedAt = Math.max(issue.updatedAt, at);
    this.commentsById.set(comment.id, comment);
    return comment;
  }

  private updateComment(comment: CommentState, body: string, by: UserState, at: number): void {
    comment.previousBody = comment.body;
    comment.body = body;
    comment.lastActor = by;
    comment.updatedAt = Math.max(comment.updatedAt, at);
    if (this.opts.commentEditTouchesIssue) comment.issue.updatedAt = Math.max(comment.issue.updatedAt, at);
  }

  private canonical(path: string): string {
    const m = /^\/repositories\/(\d+)(\/.*)?$/.exec(path);
    const repo = m ? this.reposById.get(Number(m[1])) : undefined;
    if (!m || !repo) return path;
    return `/repos/${repo.owner.login}/${repo.name}${m[2] ?? ''}`;
  }

  private bucketOf(token: string | undefined): Bucket {
    if (token === undefined) return this.anonymous;
    const state = this.tokens.get(token);
    if (!state) throw new Error('unknown token: addToken it first');
    return state.bucket;
  }

  /** Opens a new hourly window when the last one has passed. */
  private refresh(bucket: Bucket): void {
    const nowS = Math.floor(this.now() / 1000);
    if (bucket.reset <= nowS) {
      bucket.used = 0;
      bucket.reset = nowS + 3600;
    }
  }

  private takeFault(req: RequestInfo): FaultSpec | undefined {
    const fault = this.faults.find((f) => f.remaining > 0 && f.match(req));
    if (!fault) return undefined;
    fault.remaining--;
    fault.hits++;
    if (fault.remaining <= 0) this.faults = this.faults.filter((f) => f !== fault);
    return fault.spec;
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.pending.delete(wake);
        resolve();
      };
      // A held request never keeps the test process alive by itself.
      const timer = setTimeout(wake, ms).unref();
      this.pending.add(wake);
    });
  }

  // ---- JSON as GitHub writes it ---------------------------------------------------------------

  private userJson(user: UserState): GitHubUser {
    const api = `${this.url}/users/${encodeURIComponent(user.login)}`;
    const html =
      user.type === 'Bot'
        ? `${this.opts.htmlUrl}/apps/${user.login.replace(/\[bot\]$/, '')}`
        : `${this.opts.htmlUrl}/${user.login}`;
    return {
      login: user.login,
      id: user.id,
      node_id: nodeId(user.type === 'Bot' ? 'Bot' : user.type, user.id),
      avatar_url: `https://avatars.githubusercontent.com/u/${user.id}?v=4`,
      gravatar_id: '',
      url: api,
      html_url: html,
      followers_url: `${api}/followers`,
      following_url: `${api}/following{/other_user}`,
      gists_url: `${api}/gists{/gist_id}`,
      starred_url: `${api}/starred{/owner}{/repo}`,
      subscriptions_url: `${api}/subscriptions`,
      organizations_url: `${api}/orgs`,
      repos_url: `${api}/repos`,
      events_url: `${api}/events{/privacy}`,
      received_events_url: `${api}/received_events`,
      type: user.type,
      user_view_type: 'public',
      site_admin: false,
    };
  }

  private repoJson(repo: RepoState, caller?: Caller): GitHubRepository {
    const fullName = `${repo.owner.login}/${repo.name}`;
    const api = `${this.url}/repos/${fullName}`;
    const open = [...repo.issues.values()].filter((i) => i.state === 'open').length;
    const json: GitHubRepository = {
      id: repo.id,
      node_id: nodeId('Repository', repo.id),
      name: repo.name,
      full_name: fullName,
      owner: this.userJson(repo.owner),
      private: repo.private,
      visibility: repo.private ? 'private' : 'public',
      html_url: `${this.opts.htmlUrl}/${fullName}`,
      description: null,
      fork: false,
      url: api,
      issues_url: `${api}/issues{/number}`,
      comments_url: `${api}/comments{/number}`,
      clone_url: repo.cloneUrl ?? `${this.url}/git/${fullName}.git`,
      git_url: `git://${new URL(this.opts.htmlUrl).host}/${fullName}.git`,
      ssh_url: `git@${new URL(this.opts.htmlUrl).host}:${fullName}.git`,
      default_branch: repo.defaultBranch,
      archived: false,
      disabled: false,
      has_issues: true,
      open_issues_count: open,
      created_at: iso(repo.createdAt),
      updated_at: iso(repo.createdAt),
      pushed_at: iso(repo.createdAt),
    };
    if (caller?.kind === 'token' && caller.token.user.type !== 'Bot') {
      const rank = ROLE_RANK[this.roleOf(repo, caller.token.user)];
      json.permissions = {
        admin: rank >= ROLE_RANK.admin,
        maintain: rank >= ROLE_RANK.maintain,
        push: rank >= ROLE_RANK.write,
        triage: rank >= ROLE_RANK.triage,
        pull: rank >= ROLE_RANK.read,
      };
    }
    return json;
  }

  private association(repo: RepoState, user: UserState): GitHubComment['author_association'] {
    if (repo.owner.id === user.id) return 'OWNER';
    const role = repo.roles.get(user.login.toLowerCase());
    return role !== undefined && role !== 'none' ? 'COLLABORATOR' : 'NONE';
  }

  private issueJson(repo: RepoState, issue: IssueState): GitHubIssue {
    const fullName = `${repo.owner.login}/${repo.name}`;
    const api = `${this.url}/repos/${fullName}`;
    const url = `${api}/issues/${issue.number}`;
    const pr = issue.pullRequest;
    const html = `${this.opts.htmlUrl}/${fullName}/${pr ? 'pull' : 'issues'}/${issue.number}`;
    const json: GitHubIssue = {
      url,
      repository_url: api,
      labels_url: `${url}/labels{/name}`,
      comments_url: `${url}/comments`,
      events_url: `${url}/events`,
      html_url: html,
      id: issue.id,
      node_id: nodeId(pr ? 'PullRequest' : 'Issue', issue.id),
      number: issue.number,
      title: issue.title,
      user: this.userJson(issue.user),
      labels: issue.labels.map((name, i) => ({
        id: issue.id * 100 + i,
        node_id: nodeId('Label', issue.id * 100 + i),
        url: `${api}/labels/${encodeURIComponent(name)}`,
        name,
        color: 'ededed',
        default: false,
        description: null,
      })),
      state: issue.state,
      locked: false,
      assignee: null,
      assignees: [],
      milestone: null,
      comments: issue.comments.length,
      created_at: iso(issue.createdAt),
      updated_at: iso(issue.updatedAt),
      closed_at: issue.closedAt === null ? null : iso(issue.closedAt),
      author_association: this.association(repo, issue.user),
      active_lock_reason: null,
      body: issue.body,
      closed_by: issue.closedBy && issue.state === 'closed' ? this.userJson(issue.closedBy) : null,
      timeline_url: `${url}/timeline`,
      performed_via_github_app: null,
      state_reason: issue.stateReason,
    };
    if (pr) {
      json.draft = pr.draft;
      json.pull_request = {
        url: `${api}/pulls/${issue.number}`,
        html_url: html,
        diff_url: `${html}.diff`,
        patch_url: `${html}.patch`,
        merged_at: pr.mergedAt === null ? null : iso(pr.mergedAt),
      };
    }
    return json;
  }

  private commentJson(comment: CommentState): GitHubComment {
    const { repo, issue } = comment;
    const fullName = `${repo.owner.login}/${repo.name}`;
    const kind = issue.pullRequest ? 'pull' : 'issues';
    return {
      url: `${this.url}/repos/${fullName}/issues/comments/${comment.id}`,
      html_url: `${this.opts.htmlUrl}/${fullName}/${kind}/${issue.number}#issuecomment-${comment.id}`,
      issue_url: `${this.url}/repos/${fullName}/issues/${issue.number}`,
      id: comment.id,
      node_id: nodeId('IssueComment', comment.id),
      user: this.userJson(comment.user),
      created_at: iso(comment.createdAt),
      updated_at: iso(comment.updatedAt),
      author_association: this.association(repo, comment.user),
      body: comment.body,
      performed_via_github_app: null,
    };
  }
}

// ---- helpers ------------------------------------------------------------------------------------

function splitFullName(fullName: string): [string, string] {
  const m = /^([^/\s]+)\/([^/\s]+)$/.exec(fullName);
  if (!m) throw new Error(`"${fullName}" is not owner/repo`);
  return [m[1]!, m[2]!];
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function parseJson(raw: string): unknown {
  if (raw.trim() === '') return {};
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    return refuse(400, 'Problems parsing JSON');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return refuse(400, 'Body should be a JSON object');
  }
  return value;
}

/** A comment body from a request, refused as GitHub refuses it. */
function commentBody(body: unknown, docs: string): string {
  const value = (body as Record<string, unknown>).body;
  if (value === undefined) return refuse(422, 'Invalid request.\n\n"body" wasn\'t supplied.', docs);
  if (typeof value !== 'string') {
    return refuse(
      422,
      `Invalid request.\n\nFor 'properties/body', ${JSON.stringify(value)} is not a string.`,
      docs,
    );
  }
  if (value.trim() === '') {
    return refuse(422, 'Validation Failed', docs, {
      errors: [{ resource: 'IssueComment', code: 'missing_field', field: 'body' }],
    });
  }
  if (value.length > MAX_COMMENT) {
    return refuse(422, 'Validation Failed', docs, {
      errors: [
        {
          resource: 'IssueComment',
          code: 'custom',
          field: 'body',
          message: `body is too long (maximum is ${MAX_COMMENT} characters)`,
        },
      ],
    });
  }
  return value;
}

function oneOf<T extends string>(
  value: string | null,
  allowed: T[],
  fallback: T,
  field: string,
  docs: string,
): T {
  if (value === null) return fallback;
  if ((allowed as string[]).includes(value)) return value as T;
  return refuse(422, 'Validation Failed', docs, { errors: [{ resource: 'Issue', field, code: 'invalid' }] });
}

function parseSince(value: string | null, docs: string): number | null {
  if (value === null) return null;
  const ms = Date.parse(value);
  if (Number.isNaN(ms)) {
    return refuse(422, 'Validation Failed', docs, {
      errors: [{ resource: 'Issue', field: 'since', code: 'invalid' }],
    });
  }
  return ms;
}

function clampInt(value: string | null, fallback: number, min: number, max: number): number {
  const n = value === null || !/^\d+$/.test(value) ? NaN : Number(value);
  if (Number.isNaN(n) || n < min) return fallback;
  return Math.min(n, max);
}

/** If-None-Match with the weak comparison RFC 9110 prescribes: `W/` is ignored, `*` matches. */
function etagMatches(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  const opaque = (t: string) => t.trim().replace(/^W\//, '');
  return header.split(',').some((t) => t.trim() === '*' || opaque(t) === opaque(etag));
}

function faultReply(spec: FaultSpec): Reply {
  const status = spec.status!;
  const headers = { ...spec.headers };
  if (spec.body !== undefined) return { status, body: spec.body, headers };
  if (status >= 502 && status <= 504) {
    // GitHub's edge answers these with a web page, not JSON.
    const page = `<!DOCTYPE html><html><head><title>${status}</title></head><body>GitHub is unavailable.</body></html>`;
    return { status, body: page, headers, contentType: 'text/html; charset=utf-8' };
  }
  if (status === 500) return { status, body: { message: 'Server Error' }, headers };
  return { ...errorReply(status, `Injected fault ${status}`), headers };
}

function matcher(match: RequestMatch): (req: RequestInfo) => boolean {
  if (typeof match === 'function') return match;
  if (match instanceof RegExp) return (req) => match.test(req.path) || match.test(req.canonicalPath);
  const m = /^(?:([A-Z*]+)\s+)?(\/\S*)$/.exec(match.trim());
  if (!m) throw new Error(`not a request pattern: "${match}" (say "GET /repos/o/r/issues")`);
  const method = m[1] ?? '*';
  const source = m[2]!
    .split(/(\*\*|\*|\{[^}]+\})/)
    .map((part) =>
      part === '**'
        ? '.*'
        : part === '*'
          ? '[^/]*'
          : /^\{[^}]+\}$/.test(part)
            ? '[^/]+'
            : part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'),
    )
    .join('');
  const re = new RegExp(`^${source}$`, 'i');
  return (req) =>
    (method === '*' || method === req.method) && (re.test(req.path) || re.test(req.canonicalPath));
}

/** A POST or PATCH body, which `parseJson` has already checked is a JSON object. */
function jsonObject(body: unknown): Record<string, unknown> {
  return body as Record<string, unknown>;
}
