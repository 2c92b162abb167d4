/**
 * A fake Fly.io Machines REST API for tests: a real HTTP server on 127.0.0.1 that answers the
 * machine and volume endpoints under `/v1/apps/{app_name}` in Fly's wire format, so the hub's own
 * client runs unchanged against it (`FLY_API_URL = fake.url`, which has no `/v1`). Machines move
 * through Fly's states in time, and a test can back each one with a real process (`onStart`/`onStop`).
 *
 * Behaviour modelled on Fly's documentation (fly.io/docs/machines/api/: "Working with the Machines
 * API", "Machines", "Volumes"; "Machine states"), its OpenAPI description and the fly-go client:
 * - Auth: `Authorization: Bearer <token>`, or `FlyV1 <macaroon>[,<macaroon>…]` as fly-go sends
 *   deploy tokens. No valid token, or one not allowed on the app: 401.
 * - Machines: list (`include_deleted`, `region`, `state` (comma-separated) and `metadata.{key}=
 *   {value}`, AND-ed); create (only `config.image` required; answers the machine still `created`,
 *   as Fly's example does, then boots it unless `skip_launch`); get; start (answers
 *   `{previous_state, migrated, new_host}`); stop (optional `{signal, timeout}`; `{ok: true}`);
 *   delete (`?force=true`, or fly-go's `?kill=true`; `{ok: true}`); wait (`state` started|stopped|
 *   suspended|destroyed, or flyctl's `settled`, repeatable as fly-go sends it, default started;
 *   `timeout` in seconds, default and maximum 60; `instance_id` or fly-go's `version`): 200
 *   `{ok: true}`, 408 when the timeout passes first, 400 for a bad argument. Waiting for `stopped`
 *   without `instance_id` is 400: the docs' Wait parameters say of `instance_id` "Required when
 *   waiting for Machine to be in `stopped` state" (superfly/docs machines/api/machines-resource).
 * - States: created → starting → started → stopping → stopped; → destroying → destroyed, after
 *   which the machine leaves the list (unless `include_deleted`) and frees its name and volume.
 *   Ids are 14 hex digits, `instance_id` a ULID, `private_ip` a 6PN fdaa:: address, events
 *   `{id, type, status, source, timestamp (ms)}` newest first.
 * - Config: `files[].raw_value` is base64 and `guest_path` absolute; one mount per machine;
 *   `memory_mb` a multiple of 256; a volume mounts only in its own region and on one machine.
 * - Volumes: list, create (`name` required, `size_gb` default 3, names may repeat), get, delete
 *   (answers the volume, state `destroyed`). Ids look like `vol_9vw681egy1jj5xm4`. Create's
 *   `require_unique_zone` defaults to true: "we will provision this volume on hardware that doesn't
 *   have another volume with the same name on it ... This flag can also cause volume creation to
 *   fail, in case we have used up all unique zones, in which case you probably want to set it to
 *   false. Default true." (the docs' Create a volume). Each region has `zonesPerRegion` zones.
 *   A mounted volume stays attached until its machine is `destroyed` (not while `destroying`).
 * - Rate limits: 1 request a second per action with bursts of 3; Get Machine 5 a second with
 *   bursts of 10; "scoped per identifier (Machine ID or App ID)": one bucket per (token, action,
 *   machine or volume id, else app). Option `rateLimit`.
 * - Errors are `{"error": "..."}`, with `status: "insufficient_capacity"` on capacity errors (the
 *   OpenAPI `ErrorResponse`); every answer carries a `fly-request-id` header, which fly-go reads.
 *   Error bodies other projects logged from the live API: 401 "unauthorized"; 404 "app not found",
 *   "machine not found"; 409 "already_exists: unique machine name violation, machine ID <id>
 *   already exists with name "<name>""; 408 "machine failed to reach desired state, started,
 *   currently stopped"; 400 "invalid_argument: invalid WaitMachineRequest.Timeout: value must be
 *   inside range [1s, 1m0s]"; 400 "json: cannot unmarshal array into Go value of type
 *   main.stopRequest"; 412 "failed_precondition: unable to destroy machine, not currently stopped,
 *   suspended, failed or created", "failed_precondition: volume already claimed",
 *   "failed_precondition: volume is currently bound to machine: <id>"; and the capacity errors of
 *   {@link CreateFailure}.
 *
 * Choices where Fly documents nothing: 429 answers `{"error": "rate limit exceeded"}` with a
 * `retry-after` header in seconds (Fly promises neither: clients should back off without it);
 * injected faults and 401s cost no rate limit; a create without an image is 422 "config.image is
 * required", with an unknown volume 400, with a volume in another region 412; other validation
 * messages are the fake's own in Fly's `invalid_argument:` style, and ill-typed fields get Go's
 * encoding/json message; starting an active machine is 412 "failed_precondition: machine still
 * active, refusing to start"; stopping a stopped machine or deleting one being destroyed changes
 * nothing; a destroyed machine is 404 at once (option `keepDestroyedMs`: Fly keeps it readable a
 * while) and a deleted volume leaves the list at once (Fly lists it as `pending_destroy` a while);
 * an `instance_id` that is not the machine's is 400; 5xx faults answer JSON; the unique-zone
 * refusal is 412 "failed_precondition: no unique zones available" (Fly documents the failure, not
 * its body); {@link FakeFly.failNextStarts} answers start as the live API was seen to when the host
 * is full: 409 "aborted: could not reserve resource for machine: insufficient memory available to
 * fulfill request" (logged from production in Kilo-Org/cloud#412; Fly's staff list "not enough
 * resource capacity on the host" among the 409s, community.fly.io/t/15555); when `onStart` throws,
 * the machine stops with an `exit` event whose `request.error` (the fake's own field) says why.
 *
 * Not modelled: update, leases (the `fly-machine-lease-nonce` header is ignored), suspend, restart,
 * cordon, exec, the metadata, apps and secrets endpoints, `lease_ttl`, `summary`, health checks,
 * services, restart policies (only `auto_destroy` on exit), volume extend and snapshots.
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  createServer,
  STATUS_CODES,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import type { AddressInfo } from 'node:net';

export interface FlyMachineConfig {
  image: string;
  env?: Record<string, string>;
  metadata?: Record<string, string>;
  guest?: { cpu_kind: string; cpus: number; memory_mb: number };
  mounts?: { volume: string; path: string; name?: string }[];
  files?: { guest_path: string; raw_value?: string; secret_name?: string; mode?: number }[];
  restart?: { policy?: 'no' | 'always' | 'on-failure'; max_retries?: number };
  auto_destroy?: boolean;
  [key: string]: unknown;
}
export interface FlyMachineEvent {
  id: string;
  type: string;
  status: string;
  source: 'user' | 'flyd';
  timestamp: number;
  request?: Record<string, unknown>;
}
/** A machine as `GET /v1/apps/{app}/machines/{id}` answers it. */
export type FlyMachine = ReturnType<typeof machineJson>;
/** A volume as `GET /v1/apps/{app}/volumes/{id}` answers it. */
export type FlyVolume = ReturnType<typeof volumeJson>;

type MachineAction = 'list' | 'create' | 'get' | 'update' | 'start' | 'stop' | 'delete' | 'wait';
type VolumeAction = 'volume_list' | 'volume_create' | 'volume_get' | 'volume_delete';
/** What a request does, as Fly's rate limits count it. */
export type FlyAction = MachineAction | VolumeAction;

export interface FlyRateLimit {
  /** Requests a second per action. Fly's: 1. */
  perSecond: number;
  /** Short-term burst per action. Fly's: 3. */
  burst: number;
  /** Get Machine's rate. Default 5, Fly's. */
  getPerSecond?: number;
  /** Get Machine's burst. Default 10, Fly's. */
  getBurst?: number;
}

export interface FakeFlyOptions {
  /** Apps that exist. Default `['thopters']`. */
  apps?: string[];
  /** Tokens allowed on every app (more with {@link FakeFly.addToken}). Default none. */
  tokens?: string[];
  /** Region of a machine or volume created without one. Default `ord`. */
  defaultRegion?: string;
  /** Time from `starting` to `started`, run alongside `onStart`. Default 20 ms. */
  bootMs?: number;
  /** Time from `stopping` to `stopped`, after `onStop`. Default 10 ms. */
  stopMs?: number;
  /** Time from `destroying` to `destroyed`, after `onStop`. Default 10 ms. */
  destroyMs?: number;
  /** How long get still answers a destroyed machine. Default 0: 404 at once. */
  keepDestroyedMs?: number;
  /** Hardware zones per region, which `require_unique_zone` volumes use up. Default 4. */
  zonesPerRegion?: number;
  /** Per-action token buckets, or false for none. Default Fly's documented limits. */
  rateLimit?: FlyRateLimit | false;
  /** Boots a machine: `started` once this resolved and `bootMs` passed. A throw stops the machine. */
  onStart?: (machine: FlyMachine) => Promise<{ privateIp?: string } | void>;
  /** Runs when a machine `onStart` booted stops or is destroyed (or the fake closes). */
  onStop?: (machine: FlyMachine) => Promise<void>;
}

/** One request the fake answered. The token never appears, only its scheme. */
export interface FlyRecordedRequest {
  method: string;
  /** Path as requested, with `/v1`. */
  path: string;
  query: Record<string, string>;
  /** 0 while in flight (a wait), and for a connection the fake closed. */
  status: number;
  action: FlyAction | null;
  /** `Bearer`, `FlyV1`, another scheme, or null without the header. */
  authScheme: string | null;
  body?: unknown;
}

export interface FlyFault {
  /** Default any method. */
  method?: string;
  /** The path with `/v1`: exact, with `*` for one segment and `**` for any; or a RegExp. Default any. */
  pathPattern?: string | RegExp;
  status: number;
  /** Default `{"error": "<status text>"}`. */
  body?: unknown;
  headers?: Record<string, string>;
}

/**
 * How {@link FakeFly.failNextCreates} fails a create, as the live API was seen to:
 * `insufficient_capacity`: no host in the region, 422 `{"error": "could not find a candidate
 * host", "status": "insufficient_capacity"}`; `volume_host_full`: the mounted volume's host is full,
 * 412 "insufficient resources to create new machine with existing volume '<vol>'" (without a mount,
 * as `insufficient_capacity`); `host_full`: 409 "aborted: insufficient resources available to
 * fulfill request: insufficient memory available to fulfill request"; or a bare 5xx.
 */
export type CreateFailure = 'insufficient_capacity' | 'volume_host_full' | 'host_full' | 500 | 502 | 503;

interface Reply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}
interface MachineState {
  app: string;
  id: string;
  name: string;
  region: string;
  state: string;
  instanceId: string;
  privateIp: string;
  config: FlyMachineConfig;
  createdAt: number;
  updatedAt: number;
  events: FlyMachineEvent[];
  /** `onStart` succeeded and `onStop` has not run: a backing process may be up. */
  running: boolean;
  /** Its transitions, one after another. */
  work: Promise<void>;
  destroyedAt: number | null;
}
type Finish = (reply: Reply | null) => void;
interface Incoming {
  authorization: string | undefined;
  res: ServerResponse;
  method: string;
  url: URL;
  raw: string;
}
interface Route {
  app: string;
  id: string | undefined;
  action: FlyAction | 'unmodelled';
}

/** [method, path under /v1/apps/{app}/, action]; other machine and volume endpoints answer 501. */
const ROUTES: [string, RegExp, Route['action']][] = [
  ['GET', /^machines$/, 'list'],
  ['POST', /^machines$/, 'create'],
  ['GET', /^machines\/[^/]+$/, 'get'],
  ['POST', /^machines\/[^/]+$/, 'unmodelled'], // update
  ['DELETE', /^machines\/[^/]+$/, 'delete'],
  ['POST', /^machines\/[^/]+\/start$/, 'start'],
  ['POST', /^machines\/[^/]+\/stop$/, 'stop'],
  ['GET', /^machines\/[^/]+\/wait$/, 'wait'],
  ['GET', /^volumes$/, 'volume_list'],
  ['POST', /^volumes$/, 'volume_create'],
  ['GET', /^volumes\/[^/]+$/, 'volume_get'],
  ['DELETE', /^volumes\/[^/]+$/, 'volume_delete'],
  ['*', /^(machines|volumes)\/[^/]+(\/.*)?$/, 'unmodelled'],
];

/** A body as flaps' Go structs decode it: `$` names the type, `[x]` is a slice, `{'*': x}` a map. */
type Spec = string | Spec[] | { [field: string]: Spec };
const S = 'string';
const I = 'int';
const B = 'bool';
const MACHINE_CONFIG = {
  $: 'fly.MachineConfig',
  image: S,
  env: { $: 'map[string]string', '*': S, metadata: { $: 'map[string]string', '*': S } },
  auto_destroy: B,
  schedule: S,
  services: ['any'],
  init: { $: 'fly.MachineInit', cmd: [S], exec: [S] },
  guest: { $: 'fly.MachineGuest', cpu_kind: S, cpus: I, memory_mb: I },
  restart: { $: 'fly.MachineRestart', policy: S, max_retries: I },
  mounts: [{ $: 'fly.MachineMount', volume: S, path: S, name: S }],
  files: [{ $: 'fly.File', guest_path: S, raw_value: S, secret_name: S, mode: I }],
};
const CREATE_MACHINE = {
  $: 'main.createMachineRequest',
  name: S,
  region: S,
  skip_launch: B,
  config: MACHINE_CONFIG,
};
const STOP_MACHINE = { $: 'main.stopRequest', signal: S, timeout: 'any' };
const CREATE_VOLUME = {
  $: 'main.createVolumeRequest',
  name: S,
  region: S,
  size_gb: I,
  require_unique_zone: B,
  snapshot_retention: I,
  encrypted: B,
  auto_backup_enabled: B,
};

const WAIT_STATES = ['started', 'stopped', 'suspended', 'destroyed', 'settled'];
const TRANSIENT = ['creating', 'starting', 'stopping', 'restarting', 'suspending', 'destroying', 'replacing'];
const NAME_WORDS = [
  ['aged', 'bold', 'calm', 'dark', 'damp', 'late', 'lively', 'quiet', 'red', 'still', 'young'],
  ['cloud', 'field', 'forest', 'glade', 'lake', 'moon', 'pine', 'river', 'sun', 'thunder', 'wind'],
];

class HttpError extends Error {
  constructor(readonly reply: Reply) {
    super(String(reply.status));
  }
}
const fail = (status: number, error: string, extra: object = {}): Reply => ({
  status,
  body: { error, ...extra },
});
const OK: Reply = { status: 200, body: { ok: true } };
function refuse(status: number, error: string): never {
  throw new HttpError(fail(status, error));
}
function invalid(ok: unknown, message: string): asserts ok {
  if (!ok) refuse(400, `invalid_argument: ${message}`);
}
function precondition(ok: unknown, message: string): asserts ok {
  if (!ok) refuse(412, `failed_precondition: ${message}`);
}
const hex = (bytes: number) => randomBytes(bytes).toString('hex');
const base32 = (bytes: Buffer, alphabet: string) => [...bytes].map((b) => alphabet[b % 32]).join('');
const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
/** A ULID (time, then randomness), as Fly's instance and event ids are. */
function ulid(): string {
  const time = Date.now().toString(32).padStart(10, '0');
  return [...time].map((c) => CROCKFORD[parseInt(c, 32)]).join('') + base32(randomBytes(16), CROCKFORD);
}
/** The event type Fly logs for reaching each state. */
const EVENT_TYPE: Record<string, string> = {
  created: 'launch',
  starting: 'start',
  started: 'start',
  stopping: 'stop',
  stopped: 'exit',
  destroying: 'destroy',
  destroyed: 'destroy',
};

/** Starts a fake Fly Machines API on 127.0.0.1 at a free port. */
export async function startFakeFly(options: FakeFlyOptions = {}): Promise<FakeFly> {
  return new FakeFly(options).start();
}

export class FakeFly {
  /** What a client sets as FLY_API_URL: `http://127.0.0.1:<port>`, without `/v1`. */
  url = '';
  /** Every request answered (or in flight), oldest first. */
  readonly requests: FlyRecordedRequest[] = [];

  private readonly server: Server;
  private readonly opts: Required<Omit<FakeFlyOptions, 'onStart' | 'onStop' | 'apps' | 'tokens'>>;
  private readonly apps: Set<string>;
  /** Token → the apps it may touch (null: all). */
  private readonly tokens = new Map<string, Set<string> | null>();
  private readonly machineList: MachineState[] = [];
  private readonly volumeList: { app: string; json: FlyVolume }[] = [];
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  /** Pending waits: `finish(null)` drops the connection. */
  private readonly waiters = new Set<{ machine: MachineState; satisfied: () => boolean; finish: Finish }>();
  private readonly pending = new Set<() => void>();
  private faults: { fault: FlyFault; left: number }[] = [];
  private createFailures: { kind: CreateFailure; committed: boolean }[] = [];
  private closed = false;

  constructor(private readonly options: FakeFlyOptions = {}) {
    this.opts = {
      defaultRegion: options.defaultRegion ?? 'ord',
      bootMs: options.bootMs ?? 20,
      stopMs: options.stopMs ?? 10,
      destroyMs: options.destroyMs ?? 10,
      keepDestroyedMs: options.keepDestroyedMs ?? 0,
      zonesPerRegion: options.zonesPerRegion ?? 4,
      rateLimit: options.rateLimit ?? { perSecond: 1, burst: 3 },
    };
    this.apps = new Set(options.apps ?? ['thopters']);
    for (const t of options.tokens ?? []) this.addToken(t);
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(`fake Fly failed: ${String(err)}`);
      });
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve());
    });
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  /** Ends pending waits, runs `onStop` for every machine `onStart` booted, and stops the server. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.waiters) w.finish(null);
    for (const m of this.machineList) this.queue(m, () => this.release(m));
    for (const wake of this.pending) wake();
    await Promise.all(this.machineList.map((m) => m.work));
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeAllConnections();
    });
  }

  // ---- state for tests ------------------------------------------------------------------------

  /** Accepts `token` after `Bearer ` or `FlyV1 `, on `apps` only if given. */
  addToken(token: string, opts: { apps?: string[] } = {}): void {
    this.tokens.set(token.replace(/^(Bearer|FlyV1)\s+/i, ''), opts.apps ? new Set(opts.apps) : null);
  }

  /** Every machine, destroyed ones included, oldest first. */
  machines(app?: string): FlyMachine[] {
    return this.machineList.filter((m) => app === undefined || m.app === app).map(machineJson);
  }

  machine(id: string): FlyMachine | undefined {
    const m = this.machineList.find((x) => x.id === id);
    return m && machineJson(m);
  }

  /** Every volume, deleted ones included (state `destroyed`). */
  volumes(app?: string): FlyVolume[] {
    return this.volumeList.filter((v) => app === undefined || v.app === app).map((v) => ({ ...v.json }));
  }

  /** A machine someone else made (default: started): no hook, rate limit or fault applies. */
  addMachine(
    spec: { app?: string; name?: string; region?: string; state?: 'created' | 'started' | 'stopped' } & {
      config?: Partial<FlyMachineConfig>;
    } = {},
  ): FlyMachine {
    const app = spec.app ?? [...this.apps][0]!;
    this.apps.add(app);
    const config = { image: 'registry.fly.io/someone-else:latest', ...structuredClone(spec.config) };
    const m = this.spawn(app, spec.name, spec.region ?? this.opts.defaultRegion, config);
    const volume = this.volumeList.find((v) => v.json.id === config.mounts?.[0]?.volume);
    if (volume) volume.json.attached_machine_id = m.id;
    if (spec.state !== 'created') this.set(m, spec.state ?? 'started', 'flyd');
    return machineJson(m);
  }

  /**
   * Its main process exits (a crash if `exitCode` ≠ 0; killed for memory with `oomKilled`):
   * `onStop` runs, then it stops (destroyed if `auto_destroy`).
   */
  exitMachine(id: string, exitCode = 1, opts: { oomKilled?: boolean } = {}): void {
    const m = this.machineList.find((x) => x.id === id);
    if (m?.state !== 'started') throw new Error(`machine ${id} is not started`);
    this.queue(m, async () => {
      await this.release(m);
      this.exited(m, exitCode, undefined, opts.oomKilled ?? false);
    });
  }

  /** The next `n` starts find the machine's host full, as the live API answers it (see the top). */
  failNextStarts(n: number): void {
    this.failNext(n, {
      method: 'POST',
      pathPattern: '/v1/apps/*/machines/*/start',
      status: 409,
      body: {
        error:
          'aborted: could not reserve resource for machine: insufficient memory available to fulfill request',
      },
    });
  }

  /** The next `n` creates fail as Fly fails them; `committed` makes the machine anyway (an ambiguous 5xx). */
  failNextCreates(
    n: number,
    kind: CreateFailure = 'insufficient_capacity',
    opts: { committed?: boolean } = {},
  ): void {
    for (let i = 0; i < n; i++) this.createFailures.push({ kind, committed: opts.committed ?? false });
  }

  /** Answers the next `n` matching requests with `fault` instead of serving them, before auth. */
  failNext(n: number, fault: FlyFault): void {
    this.faults.push({ fault, left: n });
  }

  clearFaults(): void {
    this.faults = [];
    this.createFailures = [];
  }

  // ---- the server -----------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = (req.method ?? 'GET').toUpperCase();
    const url = new URL(req.url ?? '/', this.url);
    const raw = await readBody(req);
    const route = parseRoute(method, url.pathname);
    const record: FlyRecordedRequest = {
      method,
      path: url.pathname,
      query: Object.fromEntries(url.searchParams),
      status: 0,
      action: route && route.action !== 'unmodelled' ? route.action : null,
      authScheme: req.headers.authorization?.trim().split(/\s+/)[0] ?? null,
    };
    if (raw.trim()) record.body = tryJson(raw);
    this.requests.push(record);
    let reply: Reply | null;
    try {
      reply = await this.answer({ authorization: req.headers.authorization, res, method, url, raw }, route);
    } catch (err) {
      if (!(err instanceof HttpError)) throw err;
      reply = err.reply;
    }
    if (reply === null || this.closed) {
      res.destroy();
      return;
    }
    record.status = reply.status;
    const text = typeof reply.body === 'string';
    res.writeHead(reply.status, {
      'content-type': text ? 'text/plain; charset=utf-8' : 'application/json',
      'fly-request-id': `${ulid()}-${this.opts.defaultRegion}`,
      ...reply.headers,
    });
    res.end(text ? reply.body : JSON.stringify(reply.body));
  }

  private async answer(request: Incoming, route: Route | null): Promise<Reply | null> {
    const { authorization, res, method, url, raw } = request;
    const fault = this.takeFault(method, url.pathname);
    if (fault) {
      const status = (STATUS_CODES[fault.status] ?? 'error').toLowerCase();
      return { status: fault.status, body: fault.body ?? { error: status }, headers: fault.headers };
    }
    // Go's router answers an unknown path in plain text.
    if (!route) return { status: 404, body: '404 page not found\n' };
    const secret = /^(?:Bearer|FlyV1)\s+(\S.*)$/i.exec(authorization?.trim() ?? '')?.[1] ?? '';
    const known = [secret, ...secret.split(',')].map((s) => s.trim()).find((s) => this.tokens.has(s));
    const apps = known === undefined ? undefined : this.tokens.get(known);
    if (apps === undefined || apps?.has(route.app) === false) return fail(401, 'unauthorized');
    if (!this.apps.has(route.app)) return fail(404, 'app not found');
    if (route.action === 'unmodelled')
      return fail(501, `not modelled by the fake: ${method} ${url.pathname}`);
    const limited = this.rateLimited(secret, route);
    if (limited) return limited;
    const q = url.searchParams;
    switch (route.action) {
      case 'list':
        return { status: 200, body: this.list(route.app, q) };
      case 'create': {
        const failure = this.createFailures.shift();
        if (!failure) return this.create(route.app, parseBody(raw, CREATE_MACHINE));
        if (failure.committed) this.create(route.app, parseBody(raw, CREATE_MACHINE));
        const body = tryJson(raw) as { config?: { mounts?: { volume?: string }[] } } | undefined;
        return createFailure(failure.kind, body?.config?.mounts?.[0]?.volume);
      }
      case 'get':
        return { status: 200, body: machineJson(this.lookup(route)) };
      case 'start':
        return this.startMachine(this.lookup(route));
      case 'stop':
        if (raw.trim()) parseBody(raw, STOP_MACHINE);
        return this.stopMachine(this.lookup(route));
      case 'delete':
        return this.deleteMachine(this.lookup(route), q.get('force') === 'true' || q.get('kill') === 'true');
      case 'wait':
        return this.wait(route, q, res);
      case 'volume_list':
        return { status: 200, body: this.volumes(route.app).filter((v) => v.state !== 'destroyed') };
      case 'volume_create':
        return this.createVolume(route.app, parseBody(raw, CREATE_VOLUME));
      case 'volume_get':
        return { status: 200, body: { ...this.volume(route) } };
      case 'volume_delete': {
        const v = this.volume(route);
        precondition(
          !v.attached_machine_id,
          `volume is currently bound to machine: ${v.attached_machine_id}`,
        );
        v.state = 'destroyed';
        return { status: 200, body: { ...v } };
      }
      default:
        return fail(501, `not modelled by the fake: ${method} ${url.pathname}`);
    }
  }

  private list(app: string, q: URLSearchParams): FlyMachine[] {
    const states = q.get('state')?.split(',').filter(Boolean);
    const metadata = [...q].filter(([k]) => k.startsWith('metadata.')).map(([k, v]) => [k.slice(9), v]);
    return this.machineList
      .filter((m) => m.app === app && (q.get('include_deleted') === 'true' || m.state !== 'destroyed'))
      .filter((m) => !q.get('region') || m.region === q.get('region'))
      .filter((m) => !states?.length || states.includes(m.state))
      .filter((m) => metadata.every(([k, v]) => m.config.metadata?.[k!] === v))
      .map(machineJson);
  }

  private create(app: string, input: Record<string, unknown>): Reply {
    const config = checkConfig(input.config);
    const name = input.name as string | undefined;
    let region = input.region as string | undefined;
    invalid(region === undefined || /^[a-z]{3}$/.test(region), `invalid region "${region}"`);
    const mount = config.mounts?.[0];
    const volume = mount && this.volumeList.find((v) => v.app === app && v.json.id === mount.volume)?.json;
    if (mount) {
      invalid(volume && volume.state !== 'destroyed', `volume '${mount.volume}' not found`);
      precondition(!volume.attached_machine_id, 'volume already claimed');
      region ??= volume.region;
      precondition(
        volume.region === region,
        `volume '${volume.id}' is in region '${volume.region}', not '${region}'`,
      );
    }
    const taken =
      name && this.machineList.find((m) => m.app === app && m.name === name && m.state !== 'destroyed');
    if (taken) {
      const message = `unique machine name violation, machine ID ${taken.id} already exists with name "${name}"`;
      refuse(409, `already_exists: ${message}`);
    }
    const m = this.spawn(app, name || undefined, region ?? this.opts.defaultRegion, config);
    if (volume) volume.attached_machine_id = m.id;
    const reply = { status: 200, body: machineJson(m) };
    if (input.skip_launch !== true) this.boot(m);
    return reply;
  }

  private startMachine(m: MachineState): Reply {
    precondition(!['destroying', 'destroyed'].includes(m.state), `machine is ${m.state}`);
    precondition(
      ['created', 'stopped', 'failed'].includes(m.state),
      'machine still active, refusing to start',
    );
    const previous = m.state;
    this.boot(m);
    return { status: 200, body: { previous_state: previous, migrated: false, new_host: '' } };
  }

  private stopMachine(m: MachineState): Reply {
    precondition(!['destroying', 'destroyed'].includes(m.state), `machine is ${m.state}`);
    if (m.state !== 'started' && m.state !== 'starting') return OK;
    this.set(m, 'stopping', 'user');
    this.queue(m, async () => {
      await this.release(m);
      await this.sleep(this.opts.stopMs);
      const exit_event = {
        exit_code: 0,
        oom_killed: false,
        requested_stop: true,
        exited_at: new Date().toISOString(),
      };
      if (m.state === 'stopping') this.set(m, 'stopped', 'flyd', { exit_event });
    });
    return OK;
  }

  private deleteMachine(m: MachineState, force: boolean): Reply {
    if (m.state === 'destroyed') refuse(404, 'machine not found');
    precondition(
      force || !['started', 'starting', 'stopping'].includes(m.state),
      'unable to destroy machine, not currently stopped, suspended, failed or created',
    );
    if (m.state !== 'destroying') this.destroy(m);
    return OK;
  }

  private wait(route: Route, q: URLSearchParams, res: ServerResponse): Promise<Reply | null> | Reply {
    const timeout = /^\d+s?$/.test(q.get('timeout') ?? '60') ? parseInt(q.get('timeout') ?? '60', 10) : NaN;
    invalid(
      timeout >= 1 && timeout <= 60,
      'invalid WaitMachineRequest.Timeout: value must be inside range [1s, 1m0s]',
    );
    const states = q.getAll('state').flatMap((s) => s.split(','));
    if (states.length === 0) states.push('started');
    const bad = states.find((s) => !WAIT_STATES.includes(s));
    invalid(!bad, `invalid WaitMachineRequest.State: value must be one of ${WAIT_STATES.join(', ')}`);
    // Waiting for `destroyed` on a machine already gone succeeds.
    const gone = this.machineList.find((x) => x.app === route.app && x.id === route.id && this.reaped(x));
    if (gone && states.includes('destroyed')) return OK;
    const m = this.lookup(route);
    const version = q.get('instance_id') ?? q.get('version');
    invalid(
      version || !states.includes('stopped'),
      'instance_id is required when waiting for the stopped state',
    );
    invalid(!version || version === m.instanceId, `${version} is not a version of machine ${m.id}`);
    const satisfied = () =>
      states.includes(m.state) || (states.includes('settled') && !TRANSIENT.includes(m.state));
    if (satisfied()) return OK;
    return new Promise<Reply | null>((resolve) => {
      const finish: Finish = (reply) => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
        resolve(reply);
      };
      const waiter = { machine: m, satisfied, finish };
      const timer = setTimeout(() => {
        finish(
          fail(408, `machine failed to reach desired state, ${states.join(', ')}, currently ${m.state}`),
        );
      }, timeout * 1000).unref();
      res.once('close', () => finish(null));
      this.waiters.add(waiter);
    });
  }

  private createVolume(app: string, input: Record<string, unknown>): Reply {
    type Input = {
      name?: string;
      region?: string;
      size_gb?: number;
      snapshot_retention?: number;
      require_unique_zone?: boolean;
    };
    const {
      name,
      region = this.opts.defaultRegion,
      size_gb = 3,
      snapshot_retention = 5,
      require_unique_zone = true,
    } = input as Input;
    invalid(name, 'name is required');
    invalid(
      /^[a-z0-9_]{1,30}$/.test(name),
      'volume name must be at most 30 lowercase letters, digits or underscores',
    );
    invalid(/^[a-z]{3}$/.test(region), `invalid region "${region}"`);
    invalid(size_gb >= 1 && size_gb <= 500, 'size_gb must be between 1 and 500');
    invalid(
      snapshot_retention >= 1 && snapshot_retention <= 60,
      'snapshot_retention must be between 1 and 60',
    );
    const zones = Array.from({ length: this.opts.zonesPerRegion }, (_, i) => zoneOf(region, i));
    const used = new Set(
      this.volumeList
        .filter((v) => v.app === app && v.json.name === name && v.json.state !== 'destroyed')
        .map((v) => v.json.zone),
    );
    const free = require_unique_zone ? zones.filter((z) => !used.has(z)) : zones;
    precondition(free.length > 0, 'no unique zones available');
    const zone = free[randomBytes(1)[0]! % free.length]!;
    const json = volumeJson({ name, region, size_gb, snapshot_retention, zone });
    if (input.encrypted === false) json.encrypted = false;
    if (input.auto_backup_enabled === false) json.auto_backup_enabled = false;
    this.volumeList.push({ app, json });
    return { status: 200, body: { ...json } };
  }

  // ---- machines in time -----------------------------------------------------------------------

  private spawn(
    app: string,
    name: string | undefined,
    region: string,
    config: FlyMachineConfig,
  ): MachineState {
    let id = hex(7);
    while (this.machineList.some((m) => m.id === id)) id = hex(7);
    const [adjective, noun] = NAME_WORDS.map((words) => words[randomBytes(1)[0]! % words.length]);
    const m: MachineState = {
      app,
      id,
      name: name ?? `${adjective}-${noun}-${1000 + (randomBytes(2).readUInt16BE() % 9000)}`,
      region,
      state: 'created',
      instanceId: ulid(),
      privateIp: `fdaa:0:1:a7b:${hex(2)}:${hex(2)}:${hex(2)}:2`,
      config,
      createdAt: Date.now(),
      updatedAt: Date.now(),
      events: [],
      running: false,
      work: Promise.resolve(),
      destroyedAt: null,
    };
    this.machineList.push(m);
    this.set(m, 'created', 'user');
    return m;
  }

  /** starting → started once `onStart` resolved and `bootMs` passed; a throw stops it instead. */
  private boot(m: MachineState): void {
    this.set(m, 'starting', 'user');
    this.queue(m, async () => {
      let failure: unknown = null;
      try {
        const boot = this.closed ? undefined : this.options.onStart?.(machineJson(m));
        const [result] = await Promise.all([boot, this.sleep(this.opts.bootMs)]);
        if (result?.privateIp) m.privateIp = result.privateIp;
        m.running = true;
      } catch (err) {
        failure = err ?? new Error('onStart failed');
      }
      // A stop or destroy that came in meanwhile is next in line and takes it from here.
      if (m.state !== 'starting') return;
      if (failure === null) this.set(m, 'started', 'flyd');
      else this.exited(m, 1, failure instanceof Error ? failure.message : String(failure));
    });
  }

  /** The main process ended on its own: it stops, or is destroyed if its config says `auto_destroy`. */
  private exited(m: MachineState, code: number, error?: string, oomKilled = false): void {
    // fly-go's MachineExitEvent: exit_code, oom_killed, requested_stop, exited_at (among others).
    const exit_event = {
      exit_code: code,
      oom_killed: oomKilled,
      requested_stop: false,
      exited_at: new Date().toISOString(),
    };
    this.set(m, 'stopped', 'flyd', error === undefined ? { exit_event } : { exit_event, error });
    if (m.config.auto_destroy) this.destroy(m);
  }

  private destroy(m: MachineState): void {
    this.set(m, 'destroying', 'user');
    this.queue(m, async () => {
      await this.release(m);
      await this.sleep(this.opts.destroyMs);
      for (const { json } of this.volumeList)
        if (json.attached_machine_id === m.id) json.attached_machine_id = null;
      m.destroyedAt = Date.now();
      this.set(m, 'destroyed', 'flyd');
    });
  }

  /** Runs `onStop` if `onStart` booted it; a failing hook does not keep the machine up, as on Fly. */
  private async release(m: MachineState): Promise<void> {
    if (!m.running) return;
    m.running = false;
    await Promise.resolve()
      .then(() => this.options.onStop?.(machineJson(m)))
      .catch(() => undefined);
  }

  /** Moves `m` to `state`, logs the event and wakes the waits it satisfies. */
  private set(m: MachineState, state: string, source: 'user' | 'flyd', request?: object): void {
    m.state = state;
    m.updatedAt = Date.now();
    const event = { id: ulid(), type: EVENT_TYPE[state] ?? state, status: state, source };
    m.events.unshift({ ...event, timestamp: m.updatedAt, ...(request ? { request: { ...request } } : {}) });
    for (const w of this.waiters) if (w.machine === m && w.satisfied()) w.finish(OK);
  }

  private queue(m: MachineState, step: () => Promise<void>): void {
    m.work = m.work.then(step);
  }

  private reaped(m: MachineState): boolean {
    return m.destroyedAt !== null && Date.now() - m.destroyedAt >= this.opts.keepDestroyedMs;
  }

  private lookup(route: Route): MachineState {
    const m = this.machineList.find((x) => x.app === route.app && x.id === route.id);
    if (!m || this.reaped(m)) return refuse(404, 'machine not found');
    return m;
  }

  private volume(route: Route): FlyVolume {
    const v = this.volumeList.find((x) => x.app === route.app && x.json.id === route.id)?.json;
    if (!v || v.state === 'destroyed') return refuse(404, 'volume not found');
    return v;
  }

  // ---- limits and faults ----------------------------------------------------------------------

  private rateLimited(secret: string, route: Route): Reply | null {
    const limit = this.opts.rateLimit;
    if (!limit) return null;
    const get = route.action === 'get';
    const rate = get ? (limit.getPerSecond ?? 5) : limit.perSecond;
    const burst = get ? (limit.getBurst ?? 10) : limit.burst;
    const key = `${secret}\u0000${route.action}\u0000${route.id ?? route.app}`;
    const now = Date.now();
    const b = this.buckets.get(key) ?? { tokens: burst, at: now };
    b.tokens = Math.min(burst, b.tokens + ((now - b.at) / 1000) * rate);
    b.at = now;
    this.buckets.set(key, b);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return null;
    }
    const retryAfter = Math.max(1, Math.ceil((1 - b.tokens) / rate));
    return { ...fail(429, 'rate limit exceeded'), headers: { 'retry-after': String(retryAfter) } };
  }

  private takeFault(method: string, path: string): FlyFault | undefined {
    const entry = this.faults.find(({ fault, left }) => left > 0 && faultMatches(fault, method, path));
    if (!entry) return undefined;
    if (--entry.left <= 0) this.faults = this.faults.filter((f) => f !== entry);
    return entry.fault;
  }

  private sleep(ms: number): Promise<void> {
    if (this.closed || ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.pending.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, ms);
      this.pending.add(wake);
    });
  }
}

// ---- Fly's JSON ---------------------------------------------------------------------------------

function machineJson(m: MachineState) {
  const [, registry = 'registry-1.docker.io', repository = '', tag = 'latest'] =
    /^(?:([^/]+\.[^/]+)\/)?([^:@]+)(?::([^@]+))?/.exec(m.config.image) ?? [];
  const library = repository.includes('/') || registry !== 'registry-1.docker.io' ? '' : 'library/';
  return structuredClone({
    id: m.id,
    name: m.name,
    state: m.state,
    region: m.region,
    instance_id: m.instanceId,
    private_ip: m.privateIp,
    config: m.config,
    image_ref: {
      registry,
      repository: `${library}${repository}`,
      tag,
      labels: {} as Record<string, string>,
      digest: `sha256:${createHash('sha256').update(m.config.image).digest('hex')}`,
    },
    created_at: new Date(m.createdAt).toISOString().replace(/\.\d{3}Z$/, 'Z'),
    updated_at: new Date(m.updatedAt).toISOString().replace(/\.\d{3}Z$/, 'Z'),
    events: m.events,
    host_status: 'ok' as const,
  });
}

/** A region's zones are 4 hex digits, as Fly shows them; the same in every run. */
function zoneOf(region: string, i: number): string {
  return createHash('sha256').update(`${region}:${i}`).digest('hex').slice(0, 4);
}

function volumeJson(v: {
  name: string;
  region: string;
  size_gb: number;
  snapshot_retention: number;
  zone: string;
}) {
  return {
    id: `vol_${base32(randomBytes(16), '0123456789abcdefghjkmnpqrstvwxyz')}`,
    name: v.name,
    state: 'created',
    size_gb: v.size_gb,
    region: v.region,
    zone: v.zone,
    encrypted: true,
    attached_machine_id: null as string | null,
    attached_alloc_id: null,
    created_at: new Date().toISOString(),
    blocks: 0,
    block_size: 0,
    blocks_free: 0,
    blocks_avail: 0,
    fstype: '',
    snapshot_retention: v.snapshot_retention,
    auto_backup_enabled: true,
    host_dedication_key: '',
  };
}

function createFailure(kind: CreateFailure, volume: string | undefined): Reply {
  if (typeof kind === 'number') return fail(kind, (STATUS_CODES[kind] ?? 'error').toLowerCase());
  if (kind === 'volume_host_full' && volume) {
    return fail(412, `insufficient resources to create new machine with existing volume '${volume}'`);
  }
  if (kind === 'host_full') {
    const why =
      'insufficient resources available to fulfill request: insufficient memory available to fulfill request';
    return fail(409, `aborted: ${why}`);
  }
  return fail(422, 'could not find a candidate host', { status: 'insufficient_capacity' });
}

// ---- requests as flaps reads them ---------------------------------------------------------------

function parseRoute(method: string, path: string): Route | null {
  const m = /^\/v1\/apps\/([^/]+)\/(.+)$/.exec(path);
  if (!m) return null;
  const hit = ROUTES.find(([verb, re]) => (verb === '*' || verb === method) && re.test(m[2]!));
  return hit ? { app: decodeURIComponent(m[1]!), id: m[2]!.split('/')[1], action: hit[2] } : null;
}

function faultMatches(fault: FlyFault, method: string, path: string): boolean {
  if (fault.method && fault.method.toUpperCase() !== method) return false;
  const p = fault.pathPattern;
  if (p === undefined || p instanceof RegExp) return p?.test(path) ?? true;
  const glob = p
    .split(/(\*\*|\*)/)
    .map((part) => (part === '**' ? '.*' : part === '*' ? '[^/]+' : escape(part)));
  return new RegExp(`^${glob.join('')}$`).test(path);
}

const escape = (text: string) => text.replace(/[.+?^${}()|[\]\\]/g, '\\$&');

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function tryJson(raw: string): unknown {
  try {
    return JSON.parse(raw);
  } catch {
    return raw;
  }
}

function jsonKind(v: unknown): string {
  return Array.isArray(v) ? 'array' : v === null ? 'null' : typeof v === 'boolean' ? 'bool' : typeof v;
}

/** A JSON object body decoded against `spec`, refused with Go's encoding/json messages as flaps does. */
function parseBody(raw: string, spec: { $: string } & Record<string, Spec>): Record<string, unknown> {
  if (!raw.trim()) return refuse(400, 'EOF');
  const value = tryJson(raw);
  if (value === raw) {
    const c = raw.trim()[0]!;
    refuse(
      400,
      /[[{"\d tfn-]/.test(c)
        ? 'unexpected end of JSON input'
        : `invalid character '${c}' looking for beginning of value`,
    );
  }
  if (jsonKind(value) !== 'object')
    refuse(400, `json: cannot unmarshal ${jsonKind(value)} into Go value of type ${spec.$}`);
  decode(value, spec, spec.$.replace(/^main\./, ''));
  return value as Record<string, unknown>;
}

function decode(value: unknown, spec: Spec, at: string): void {
  if (value === null || value === undefined || spec === 'any') return;
  const want =
    typeof spec === 'string' ? (spec === I ? 'number' : spec) : Array.isArray(spec) ? 'array' : 'object';
  const kind = jsonKind(value);
  if (kind !== want || (spec === I && !Number.isInteger(value))) {
    // Go names the number only when it was meant for an int and is not one.
    const what = kind === 'number' && spec === I ? `number ${String(value)}` : kind;
    refuse(400, `json: cannot unmarshal ${what} into Go struct field ${at} of type ${goType(spec)}`);
  }
  if (Array.isArray(spec)) for (const item of value as unknown[]) decode(item, spec[0]!, at);
  else if (typeof spec === 'object') {
    for (const [k, v] of Object.entries(value as object)) {
      if (k !== '$' && (spec[k] ?? spec['*']))
        decode(v, spec[k] ?? spec['*']!, spec['*'] ? at : `${at}.${k}`);
    }
  }
}

function goType(spec: Spec): string {
  if (typeof spec === 'string') return spec;
  return Array.isArray(spec) ? `[]${goType(spec[0]!)}` : String(spec.$);
}

/** What flaps checks in a decoded `config` beyond types; also fills the default guest. */
function checkConfig(value: unknown): FlyMachineConfig {
  const config = structuredClone(value ?? {}) as FlyMachineConfig;
  if (!config.image) refuse(422, 'config.image is required');
  const guest = (config.guest = { cpu_kind: 'shared', cpus: 1, memory_mb: 256, ...config.guest });
  invalid(['shared', 'performance'].includes(guest.cpu_kind), `invalid cpu_kind "${guest.cpu_kind}"`);
  invalid(guest.cpus >= 1, `invalid number of cpus ${guest.cpus}`);
  invalid(
    guest.memory_mb >= 256 && guest.memory_mb % 256 === 0,
    `invalid memory size ${guest.memory_mb}MB, must be a multiple of 256MB`,
  );
  const policy = config.restart?.policy;
  invalid(!policy || ['no', 'always', 'on-failure'].includes(policy), `invalid restart policy "${policy}"`);
  invalid((config.mounts ?? []).length <= 1, 'only one volume mount is supported per machine');
  for (const { volume, path } of config.mounts ?? []) {
    invalid(volume, 'mounts[0].volume is required');
    invalid(path?.startsWith('/') && path !== '/', `invalid mount path "${path ?? ''}"`);
  }
  for (const { guest_path: path, raw_value: raw, secret_name: secret } of config.files ?? []) {
    invalid(path?.startsWith('/'), `file guest_path "${path ?? ''}" must be absolute`);
    invalid(
      raw !== undefined || secret !== undefined,
      `file ${path}: one of raw_value or secret_name is required`,
    );
    const base64 = raw === undefined || (raw.length % 4 === 0 && /^[A-Za-z0-9+/]*={0,2}$/.test(raw));
    invalid(base64, `file ${path}: raw_value is not valid base64`);
  }
  return config;
}
