import type { StatusPost } from '../../src/status/schema.js';
import type { CachedFile } from './machine.js';

/** How one post ended, with what the observer does next decided by its kind. */
export type Outcome =
  /** 204 (recorded) or 202 (the thopter has ended: accepted, not recorded). */
  | { kind: 'accepted'; status: number }
  /** 401: the token is not (yet) this thopter's. */
  | { kind: 'unauthorized' }
  /** Another 4xx: the hub will refuse this post again however often it is sent. */
  | { kind: 'rejected'; status: number; message: string }
  /** 5xx or 429: the hub is there but cannot take it now. */
  | { kind: 'hub-error'; status: number; retryAfterMs?: number }
  /** No answer: refused, reset, timed out. */
  | { kind: 'unreachable'; reason: string };

export type Send = (url: string, token: string, post: StatusPost, signal: AbortSignal) => Promise<Outcome>;

/** POSTs one status with the thopter's bearer token. Never throws. */
export const sendStatus: Send = async (url, token, post, signal) => {
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify(post),
      signal,
    });
  } catch (err) {
    return { kind: 'unreachable', reason: reasonOf(err) };
  }
  // The body is read (or dropped) in full so the connection goes back to the pool for the next post.
  const body = await res.text().catch(() => '');
  if (res.status >= 200 && res.status < 300) return { kind: 'accepted', status: res.status };
  if (res.status === 401) return { kind: 'unauthorized' };
  if (res.status >= 500 || res.status === 429) {
    const seconds = Number(res.headers.get('retry-after'));
    return {
      kind: 'hub-error',
      status: res.status,
      ...(seconds > 0 ? { retryAfterMs: seconds * 1000 } : {}),
    };
  }
  return { kind: 'rejected', status: res.status, message: hubMessage(body) };
};

function reasonOf(err: unknown): string {
  const e = err as { name?: string; message?: string; cause?: { code?: string; message?: string } };
  if (e.name === 'TimeoutError') return 'no answer in time';
  if (e.name === 'AbortError') return 'cancelled';
  return e.cause?.code ?? e.cause?.message ?? e.message ?? String(err);
}

/** The hub's error message (`{error: {message}}`), or the start of whatever it sent. */
function hubMessage(body: string): string {
  try {
    const m = (JSON.parse(body) as { error?: { message?: unknown } }).error?.message;
    if (typeof m === 'string') return m;
  } catch {
    // not JSON
  }
  return body.slice(0, 200) || '(no message)';
}

/** An outcome in words, for the log. */
export function describe(outcome: Outcome, url: string): string {
  switch (outcome.kind) {
    case 'accepted':
      return `the hub took it (${outcome.status})`;
    case 'unauthorized':
      return 'the hub refused the status token (401 unauthorized)';
    case 'rejected':
      return `the hub refused the status (${outcome.status}: ${outcome.message})`;
    case 'hub-error':
      return `the hub answers ${outcome.status}`;
    case 'unreachable':
      return `the hub is unreachable at ${url} (${outcome.reason})`;
  }
}

/**
 * Exponential backoff with "equal jitter": base·2^(failures-1), capped, then a random point in its
 * upper half, so a thousand observers that lost the hub together do not come back in step.
 */
export function backoffDelay(failures: number, baseMs: number, capMs: number, random = Math.random): number {
  const ceiling = Math.min(capMs, baseMs * 2 ** Math.min(Math.max(failures - 1, 0), 30));
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

export interface ReporterDeps {
  statusUrl: string;
  token: CachedFile;
  send: Send;
  log: (line: string) => void;
  /** The backoff's first step (the observation interval). */
  baseMs: number;
  backoffMaxMs: number;
  /** For a refused token or post. */
  slowRetryMs: number;
  postTimeoutMs: number;
  now?: () => number;
  random?: () => number;
}

/** Where the observer stands with the hub; a line is logged when this changes, not per post. */
type Link = 'starting' | 'ok' | 'no-token' | 'unauthorized' | 'rejected' | 'hub-error' | 'unreachable';

/**
 * Sends the observations to the hub: every one while the hub takes them; with backoff while it
 * is away or failing (observations go on, so activity stays exact, and the next post carries
 * the latest); slowly while it refuses the token, at once when the token file changes.
 */
export class Reporter {
  private link: Link = 'starting';
  private failures = 0;
  private failingSince = 0;
  private retryAt = 0;
  /** The token the hub last refused: a different one in the file is worth trying at once. */
  private refused?: string;
  private readonly now: () => number;

  constructor(private readonly deps: ReporterDeps) {
    this.now = deps.now ?? Date.now;
  }

  /** Posts `post` unless it is not time to (backing off, no token). */
  async offer(post: StatusPost, stop?: AbortSignal): Promise<Outcome | undefined> {
    const token = await this.token();
    if (!token) return undefined;
    const tokenChanged = this.refused !== undefined && token !== this.refused;
    if (this.now() < this.retryAt && !tokenChanged) return undefined;
    const timeout = AbortSignal.timeout(this.deps.postTimeoutMs);
    const outcome = await this.deps.send(
      this.deps.statusUrl,
      token,
      post,
      stop ? AbortSignal.any([stop, timeout]) : timeout,
    );
    if (stop?.aborted) return outcome;
    this.take(outcome, token);
    return outcome;
  }

  /** The last post, on the way out: one try within `timeoutMs`, whatever the backoff says. */
  async final(post: StatusPost, timeoutMs: number): Promise<Outcome | undefined> {
    const token = await this.token();
    if (!token) return undefined;
    return this.deps.send(this.deps.statusUrl, token, post, AbortSignal.timeout(timeoutMs));
  }

  private async token(): Promise<string | undefined> {
    const token = (await this.deps.token.read())?.trim();
    if (token) return token;
    this.to('no-token', `no status token in ${this.deps.token.path} yet: posting once it is there`);
    return undefined;
  }

  private take(outcome: Outcome, token: string) {
    const now = this.now();
    const { log } = this.deps;
    if (outcome.kind === 'accepted') {
      if (this.failures > 0 && this.link !== 'ok') {
        log(
          `the hub takes status posts again (${outcome.status}) after ${this.failures} failed over ${Math.round((now - this.failingSince) / 1000)} s`,
        );
        this.link = 'ok';
      } else {
        this.to('ok', `posting status to ${this.deps.statusUrl} (the hub answered ${outcome.status})`);
      }
      this.failures = 0;
      this.retryAt = 0;
      this.refused = undefined;
      return;
    }
    if (this.failures++ === 0) this.failingSince = now;
    if (outcome.kind === 'unauthorized') {
      this.refused = token;
      // Re-read the file at the next look even if it seems unchanged.
      this.deps.token.forget();
      this.retryAt = now + this.deps.slowRetryMs;
      this.to(
        'unauthorized',
        `${describe(outcome, this.deps.statusUrl)}: is ${this.deps.token.path} this thopter's? ` +
          `Trying again every ${seconds(this.deps.slowRetryMs)}, and at once when the file changes`,
      );
      return;
    }
    if (outcome.kind === 'rejected') {
      this.retryAt = now + this.deps.slowRetryMs;
      this.to(
        'rejected',
        `${describe(outcome, this.deps.statusUrl)}; trying again every ${seconds(this.deps.slowRetryMs)}`,
      );
      return;
    }
    const wait = Math.min(
      this.deps.backoffMaxMs,
      Math.max(
        backoffDelay(this.failures, this.deps.baseMs, this.deps.backoffMaxMs, this.deps.random),
        outcome.kind === 'hub-error' ? (outcome.retryAfterMs ?? 0) : 0,
      ),
    );
    this.retryAt = now + wait;
    this.to(
      outcome.kind,
      `${describe(outcome, this.deps.statusUrl)}; retrying with backoff, at most every ${seconds(this.deps.backoffMaxMs)}`,
    );
  }

  private to(link: Link, line: string) {
    if (link === this.link) return;
    this.link = link;
    this.deps.log(line);
  }
}

const seconds = (ms: number) => (ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`);
