import { z } from 'zod';
import { AbortedError, sleep, ThopterError } from '../../errors.js';
import type { Logger } from '../../log.js';

/**
 * A client for Fly's Machines REST API (https://fly.io/docs/machines/api/): the calls the fly
 * provider needs, each parsed with a schema, each error typed, and every request paced so that many
 * concurrent provisions stay inside Fly's per-action rate limits instead of tripping them.
 */

export type FlyErrorKind =
  | 'unauthorized'
  | 'not-found'
  | 'name-taken'
  | 'insufficient-capacity'
  | 'rate-limited'
  | 'conflict'
  | 'bad-request'
  | 'timeout'
  | 'server'
  | 'network';

export class FlyApiError extends ThopterError {
  constructor(
    readonly kind: FlyErrorKind,
    readonly status: number,
    message: string,
  ) {
    // Capacity, rate limits, 5xx and the network pass; a bad token or a bad request does not.
    const retryable = ['insufficient-capacity', 'rate-limited', 'timeout', 'server', 'network'].includes(
      kind,
    );
    super(kind === 'not-found' ? 'not-found' : 'machine', message, retryable);
    this.name = 'FlyApiError';
  }
}

export const machineSchema = z.looseObject({
  id: z.string(),
  name: z.string().default(''),
  state: z.string(),
  region: z.string().default(''),
  instance_id: z.string().optional(),
  private_ip: z.string().optional(),
  created_at: z.string().optional(),
  config: z
    .looseObject({
      image: z.string().optional(),
      metadata: z.record(z.string(), z.string()).nullish(),
      mounts: z.array(z.looseObject({ volume: z.string().optional(), path: z.string() })).nullish(),
    })
    .optional(),
  /**
   * Newest first. An `exit` event says why the machine stopped (fly-go's MachineExitEvent); events
   * are only read for that, so one in an unexpected shape drops the list rather than the machine.
   */
  events: z
    .array(
      z.looseObject({
        type: z.string(),
        request: z
          .looseObject({
            exit_event: z
              .looseObject({
                exit_code: z.number().optional(),
                oom_killed: z.boolean().optional(),
                requested_stop: z.boolean().optional(),
              })
              .optional(),
          })
          .nullish(),
      }),
    )
    .optional()
    .catch(undefined),
});
export type FlyMachine = z.infer<typeof machineSchema>;

export const volumeSchema = z.looseObject({
  id: z.string(),
  name: z.string(),
  state: z.string(),
  region: z.string().default(''),
  size_gb: z.number().optional(),
  attached_machine_id: z.string().nullish(),
  created_at: z.string().optional(),
});
export type FlyVolume = z.infer<typeof volumeSchema>;

export interface MachineFile {
  guest_path: string;
  /** Base64 of the content. */
  raw_value: string;
  mode?: number;
}

export interface CreateMachineBody {
  name: string;
  region: string;
  config: {
    image: string;
    env: Record<string, string>;
    guest: { cpu_kind: string; cpus: number; memory_mb: number };
    mounts?: { volume: string; path: string }[];
    files?: MachineFile[];
    metadata: Record<string, string>;
    restart?: { policy: 'no' | 'always' | 'on-failure'; max_retries?: number };
    auto_destroy?: boolean;
  };
}

/** The states `wait` accepts. */
export type WaitState = 'started' | 'stopped' | 'suspended' | 'destroyed';

/**
 * Pacing per action, as a token bucket: Fly allows about one request a second per action, with
 * short bursts. Requests beyond it wait here rather than earn a 429.
 */
class Bucket {
  private tokens: number;
  private last = Date.now();
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
  ) {
    this.tokens = burst;
  }

  take(signal?: AbortSignal): Promise<void> {
    const turn = this.chain.then(async () => {
      for (;;) {
        const now = Date.now();
        this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.perSecond);
        this.last = now;
        if (this.tokens >= 1) {
          this.tokens -= 1;
          return;
        }
        await sleep(Math.ceil(((1 - this.tokens) / this.perSecond) * 1000), signal);
      }
    });
    this.chain = turn.catch(() => {});
    return turn;
  }

  /** After a 429: nobody on this hub asks again before `ms` has passed. */
  drain(ms: number) {
    this.tokens = Math.min(this.tokens, 0) - (ms / 1000) * this.perSecond;
  }
}

export interface FlyApiOptions {
  baseUrl: string;
  token: string;
  app: string;
  log: Logger;
  /** Per action (Fly's documented budget is 1 a second with bursts of 3); undefined = unpaced. */
  rate: { perSecond: number; burst: number } | undefined;
}

interface Call {
  method: 'GET' | 'POST' | 'DELETE';
  path: string;
  /** The rate-limit bucket: Fly counts per action (and, for a machine's actions, per machine). */
  action: string;
  body?: unknown;
  query?: Record<string, string>;
  /** Whether a 5xx or a dropped connection may be retried: not for create, which may have happened. */
  idempotent: boolean;
  signal?: AbortSignal;
  /** Per-request timeout; `wait` asks for longer. */
  timeoutMs?: number;
}

const MAX_TRIES = 6;

export class FlyApi {
  private readonly buckets = new Map<string, Bucket>();
  private readonly authorization: string;
  /** Requests sent, by action: the benchmark reads this. */
  readonly sent = new Map<string, number>();

  constructor(private readonly opts: FlyApiOptions) {
    // Deploy tokens made by `fly tokens create` start with "FlyV1 " and are sent as they are.
    this.authorization = /^FlyV1 /.test(opts.token) ? opts.token : `Bearer ${opts.token}`;
  }

  private bucket(action: string): Bucket | undefined {
    if (!this.opts.rate) return undefined;
    let b = this.buckets.get(action);
    if (!b) {
      b = new Bucket(this.opts.rate.perSecond, this.opts.rate.burst);
      this.buckets.set(action, b);
    }
    return b;
  }

  private async call(c: Call): Promise<unknown> {
    const url = new URL(`${this.opts.baseUrl}/v1/apps/${encodeURIComponent(this.opts.app)}${c.path}`);
    for (const [k, v] of Object.entries(c.query ?? {})) url.searchParams.set(k, v);
    const bucket = this.bucket(c.action);
    for (let attempt = 1; ; attempt++) {
      await bucket?.take(c.signal);
      this.sent.set(c.action, (this.sent.get(c.action) ?? 0) + 1);
      let res: Response;
      let text: string;
      try {
        const timeout = AbortSignal.timeout(c.timeoutMs ?? 30_000);
        res = await fetch(url, {
          method: c.method,
          headers: {
            authorization: this.authorization,
            accept: 'application/json',
            ...(c.body === undefined ? {} : { 'content-type': 'application/json' }),
          },
          body: c.body === undefined ? undefined : JSON.stringify(c.body),
          signal: c.signal ? AbortSignal.any([c.signal, timeout]) : timeout,
        });
        // A body cut off midway is a network failure like any other.
        text = await res.text();
      } catch (err) {
        if (c.signal?.aborted) throw new AbortedError(c.signal.reason);
        const error = new FlyApiError(
          'network',
          0,
          `Fly API ${c.method} ${c.path}: ${(err as Error).message}`,
        );
        if (!c.idempotent || attempt >= MAX_TRIES) throw error;
        await sleep(backoff(attempt), c.signal);
        continue;
      }
      if (res.ok) {
        try {
          return text ? JSON.parse(text) : {};
        } catch {
          throw new FlyApiError(
            'server',
            res.status,
            `Fly API ${c.method} ${c.path}: the answer is not JSON`,
          );
        }
      }
      const error = toError(res.status, text, c);
      const again =
        attempt < MAX_TRIES && (error.kind === 'rate-limited' || (error.kind === 'server' && c.idempotent));
      if (!again) throw error;
      const wait = retryAfterMs(res.headers.get('retry-after')) ?? backoff(attempt);
      if (error.kind === 'rate-limited') bucket?.drain(wait);
      this.opts.log.debug({ action: c.action, status: res.status, waitMs: wait }, 'Fly API: trying again');
      await sleep(wait, c.signal);
    }
  }

  async listMachines(metadata: Record<string, string> = {}, signal?: AbortSignal): Promise<FlyMachine[]> {
    const query = Object.fromEntries(Object.entries(metadata).map(([k, v]) => [`metadata.${k}`, v]));
    const body = await this.call({
      method: 'GET',
      path: '/machines',
      action: 'list',
      query,
      idempotent: true,
      signal,
    });
    return z.array(machineSchema).parse(body);
  }

  async createMachine(body: CreateMachineBody, signal?: AbortSignal): Promise<FlyMachine> {
    const res = await this.call({
      method: 'POST',
      path: '/machines',
      action: 'create',
      body,
      idempotent: false,
      signal,
    });
    return machineSchema.parse(res);
  }

  async getMachine(id: string, signal?: AbortSignal): Promise<FlyMachine | null> {
    try {
      const res = await this.call({
        method: 'GET',
        path: `/machines/${id}`,
        action: `get:${id}`,
        idempotent: true,
        signal,
      });
      return machineSchema.parse(res);
    } catch (err) {
      if (err instanceof FlyApiError && err.kind === 'not-found') return null;
      throw err;
    }
  }

  /**
   * Waits until the machine reaches `state` or `deadlineMs` passes. Fly holds each request for at
   * most 60 s and answers 408 when the state did not come: that is looped on, not an error.
   */
  async waitMachine(
    id: string,
    state: WaitState,
    opts: { deadlineMs: number; instanceId?: string; signal?: AbortSignal },
  ): Promise<void> {
    const until = Date.now() + opts.deadlineMs;
    for (;;) {
      const left = Math.ceil((until - Date.now()) / 1000);
      if (left <= 0) {
        throw new FlyApiError(
          'timeout',
          408,
          `machine ${id} did not become ${state} in ${opts.deadlineMs / 1000} s`,
        );
      }
      const query: Record<string, string> = { state, timeout: String(Math.min(60, left)) };
      if (opts.instanceId) query.instance_id = opts.instanceId;
      try {
        await this.call({
          method: 'GET',
          path: `/machines/${id}/wait`,
          action: `wait:${id}`,
          query,
          idempotent: true,
          signal: opts.signal,
          timeoutMs: (Math.min(60, left) + 15) * 1000,
        });
        return;
      } catch (err) {
        if (!(err instanceof FlyApiError && err.kind === 'timeout')) throw err;
      }
    }
  }

  /**
   * Starts a stopped machine. A start can find the machine's host momentarily full (409 "could not
   * reserve resource for machine"): that passes as the host's other machines come and go, so it is
   * tried again with backoff, within about half a minute, before it is the caller's error.
   */
  async startMachine(id: string, signal?: AbortSignal): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.call({
          method: 'POST',
          path: `/machines/${id}/start`,
          action: `start:${id}`,
          idempotent: true,
          signal,
        });
        return;
      } catch (err) {
        if (!(err instanceof FlyApiError && err.kind === 'insufficient-capacity') || attempt >= MAX_TRIES)
          throw err;
        const wait = backoff(attempt);
        this.opts.log.info({ fly: id, waitMs: wait, err: err.message }, 'the host is full: starting again');
        await sleep(wait, signal);
      }
    }
  }

  async stopMachine(id: string, signal?: AbortSignal): Promise<void> {
    await this.call({
      method: 'POST',
      path: `/machines/${id}/stop`,
      action: `stop:${id}`,
      body: {},
      idempotent: true,
      signal,
    });
  }

  async deleteMachine(id: string, opts: { force?: boolean; signal?: AbortSignal } = {}): Promise<void> {
    await this.call({
      method: 'DELETE',
      path: `/machines/${id}`,
      action: `delete:${id}`,
      query: opts.force ? { force: 'true' } : {},
      idempotent: true,
      signal: opts.signal,
    });
  }

  async listVolumes(signal?: AbortSignal): Promise<FlyVolume[]> {
    const body = await this.call({
      method: 'GET',
      path: '/volumes',
      action: 'volumes:list',
      idempotent: true,
      signal,
    });
    return z.array(volumeSchema).parse(body);
  }

  async createVolume(
    body: { name: string; region: string; size_gb: number; require_unique_zone?: boolean },
    signal?: AbortSignal,
  ): Promise<FlyVolume> {
    const res = await this.call({
      method: 'POST',
      path: '/volumes',
      action: 'volumes:create',
      body,
      idempotent: false,
      signal,
    });
    return volumeSchema.parse(res);
  }

  async deleteVolume(id: string, signal?: AbortSignal): Promise<void> {
    await this.call({
      method: 'DELETE',
      path: `/volumes/${id}`,
      action: `volumes:delete:${id}`,
      idempotent: true,
      signal,
    });
  }
}

function backoff(attempt: number): number {
  return Math.min(8000, 500 * 2 ** (attempt - 1)) + Math.floor(Math.random() * 250);
}

function retryAfterMs(header: string | null): number | undefined {
  if (!header) return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/**
 * Fly's error bodies are `{"error": "...", "status": "unknown" | "insufficient_capacity"}` (its
 * OpenAPI ErrorResponse); anything else (an edge proxy's page) is kept short.
 */
function toError(status: number, text: string, c: Call): FlyApiError {
  let message = text.slice(0, 300);
  let kind: unknown;
  try {
    const parsed = JSON.parse(text) as { error?: unknown; message?: unknown; status?: unknown };
    if (typeof parsed.error === 'string') message = parsed.error;
    else if (typeof parsed.message === 'string') message = parsed.message;
    kind = parsed.status;
  } catch {
    // not JSON
  }
  const where = `Fly API ${c.method} ${c.path}`;
  const lower = message.toLowerCase();
  if (status === 401 || status === 403) {
    return new FlyApiError(
      'unauthorized',
      status,
      `${where}: ${message || 'unauthorized'}: check FLY_API_TOKEN, which must be a live token for this APP_NAME`,
    );
  }
  if (status === 404) return new FlyApiError('not-found', status, `${where}: ${message || 'not found'}`);
  if (status === 408) return new FlyApiError('timeout', status, `${where}: ${message || 'timed out'}`);
  if (status === 429) return new FlyApiError('rate-limited', status, `${where}: rate limited`);
  // 409 "aborted: could not reserve resource for machine: insufficient memory available …" is a
  // full host too (start and update answer it).
  if (
    kind === 'insufficient_capacity' ||
    /insufficient (resources|capacity)|no capacity|could not reserve resource/.test(lower)
  ) {
    return new FlyApiError('insufficient-capacity', status, `${where}: ${message}`);
  }
  // 409 "already_exists: unique machine name violation, machine ID … already exists with name …"
  if (/already.exists|unique machine name/.test(lower) && c.path === '/machines') {
    return new FlyApiError('name-taken', status, `${where}: ${message}`);
  }
  if (status === 409 || status === 412) return new FlyApiError('conflict', status, `${where}: ${message}`);
  if (status >= 500) return new FlyApiError('server', status, `${where}: ${status} ${message}`);
  return new FlyApiError('bad-request', status, `${where}: ${status} ${message}`);
}
