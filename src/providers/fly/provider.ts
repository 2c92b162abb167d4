import { readFile } from 'node:fs/promises';
import type { Redis } from 'ioredis';
import type { Config } from '../../config.js';
import { messageOf, sleep, ThopterError } from '../../errors.js';
import type { Logger } from '../../log.js';
import {
  GOLDEN_NAME,
  SESSION,
  type GoldenClaude,
  type GoldenClaudeInfo,
  type MachineInfo,
  type MachinePaths,
  type MachineUpkeep,
  type MachineSpec,
  type Provider,
  type SessionSnapshot,
  type Transport,
} from '../types.js';
import {
  FlyApi,
  FlyApiError,
  type CreateMachineBody,
  type FlyMachine,
  type FlyVolume,
  type MachineFile,
} from './api.js';
import { loadOrCreateHubKey, newHostKey, SshTrust, type HubKey } from './keys.js';
import { connectSsh } from './ssh.js';

/** The seed's layout inside a thopter machine (thopter/README.md holds the whole contract). */
export const FLY_PATHS: MachinePaths = {
  home: '/data/thopter',
  workspace: '/data/thopter/workspace',
  log: '/thopter/log',
  ready: '/thopter/ready',
};
const file = (guest_path: string, content: string | Buffer, mode: number): MachineFile => ({
  guest_path,
  raw_value: Buffer.from(content).toString('base64'),
  mode,
});

/** Where a machine's host key is pinned: the hub's id for a thopter, the name for a golden claude. */
function pinKey(m: FlyMachine): string {
  return m.config?.metadata?.thopter_machine ?? (m.name.startsWith('gc-') ? m.name : m.id);
}

/** The user the hub logs in as: the agent's own, so whatever the hub writes is the agent's. */
const SSH_USER = 'thopter';
/** Seed phase 2: the pool of volumes thopters mount at /data. */
const VOLUME_NAME = 'thopter_data';
const GOLDEN_VOLUME_NAME = 'golden_data';
/** A volume picked for a machine is held this long, so that two creates never pick the same one. */
const VOLUME_CLAIM_S = 600;
/** How stale the machine list may be for get(): one list request serves every thopter's check. */
const LIST_MAX_AGE_MS = 5000;
/** How stale the volume list may be for a create's first look: one request serves a burst of creates. */
const VOLUME_LIST_MAX_AGE_MS = 2000;
/** Tries of a volume create, 1, 2, 4 s apart. */
const VOLUME_CREATE_TRIES = 4;
/** How long a stop may take before the machine is deleted with force. */
const STOP_WAIT_MS = 60_000;
/** How long a deleted machine may take to be destroyed, which is when Fly frees its volume. */
const DESTROY_WAIT_MS = 30_000;
const GONE = new Set(['destroyed', 'destroying', 'replaced']);
/** States a machine rests in without running: keepUp starts it again from these. */
const DOWN = new Set(['stopped', 'failed', 'suspended']);
const MAX_BOOT_RESTARTS = 2;
/**
 * Starts of a running thopter's stopped machine, over its whole life. Fly's own restart policy
 * (on-failure, 3 tries) has already given up by the time the hub sees it stopped, so a few more
 * tell a passing fault from a thopter that cannot run.
 */
const MAX_RUN_RESTARTS = 3;

type Role = 'thopter' | 'golden';

/**
 * Thopters as Fly Machines, through the Machines REST API; commands and files over SSH to the
 * machine's own sshd. A machine is found by its metadata, never by parsing names: `thopter_swarm`
 * marks it as this hub's (the Redis prefix), `thopter_role` says thopter or golden claude, and
 * `thopter_machine` carries the hub's id for it, which is what the rest of the hub uses.
 */
export class FlyProvider implements Provider {
  readonly name = 'fly' as const;
  /** The observer inside the machine posts the session's status. */
  readonly hubObserves = false;
  readonly api: FlyApi;
  private readonly trust: SshTrust;
  private readonly key: HubKey;
  private known = new Map<string, FlyMachine>();
  private listedAt = 0;
  /** When this hub created or last looked at each machine itself, by the hub's id. */
  private readonly madeAt = new Map<string, number>();
  /** Boots tried again, by the hub's machine id. */
  private readonly restarts = new Map<string, number>();
  private listing?: { at: number; done: boolean; list: Promise<FlyMachine[]> };
  private volumeList?: { at: number; done: boolean; list: Promise<FlyVolume[]> };

  constructor(
    private readonly config: Config,
    private readonly redis: Redis,
    private readonly log: Logger,
  ) {
    if (!config.fly.token) throw new Error('THOPTER_PROVIDER=fly needs FLY_API_TOKEN');
    this.api = new FlyApi({
      baseUrl: config.fly.apiUrl,
      token: config.fly.token,
      app: config.fly.app,
      rate: config.fly.rate,
      log,
    });
    this.key = loadOrCreateHubKey(config.dataDir);
    this.trust = new SshTrust(redis, config.redisPrefix);
  }

  /** Publishes this hub's public key, so that machines made by any hub let it in. */
  async start(): Promise<void> {
    await this.trust.register(this.key.publicKey);
  }

  private marks(role: Role): Record<string, string> {
    return { thopter_swarm: this.config.redisPrefix, thopter_role: role };
  }

  private isOurs(m: FlyMachine, role: Role): boolean {
    const md = m.config?.metadata ?? {};
    return md.thopter_swarm === this.config.redisPrefix && md.thopter_role === role && !GONE.has(m.state);
  }

  /**
   * All of the app's machines: one request however many callers ask at once, and reused for
   * `maxAgeMs`. List requests share the app's one-a-second budget with creates, so thopters'
   * checks, teardowns and golden-claude lookups all read this one list.
   */
  private refresh(maxAgeMs = 0, force = false): Promise<FlyMachine[]> {
    const last = this.listing;
    if (!force && last && (!last.done || Date.now() - last.at <= maxAgeMs)) return last.list;
    const entry = { at: Date.now(), done: false, list: this.api.listMachines() };
    this.listing = entry;
    entry.list.then(
      (machines) => {
        entry.done = true;
        const known = new Map(
          machines
            .filter((m) => this.isOurs(m, 'thopter'))
            .map((m) => [m.config?.metadata?.thopter_machine ?? '', m] as const)
            .filter(([k]) => k !== ''),
        );
        // A machine this hub made after the list was asked for is not in it, yet exists.
        for (const [id, at] of this.madeAt) {
          if (entry.at - at > 60_000) this.madeAt.delete(id); // long listed, or gone
          const m = this.known.get(id);
          if (at > entry.at && m && !known.has(id)) known.set(id, m);
        }
        this.known = known;
        this.listedAt = entry.at;
      },
      () => {
        if (this.listing === entry) this.listing = undefined;
      },
    );
    return entry.list;
  }

  /** The Fly machine behind the hub's id. */
  private async machine(id: string, maxAgeMs = LIST_MAX_AGE_MS): Promise<FlyMachine | undefined> {
    if (!this.known.has(id) || Date.now() - this.listedAt > maxAgeMs) await this.refresh(1000);
    return this.known.get(id);
  }

  private info(m: FlyMachine): MachineInfo {
    const md = m.config?.metadata ?? {};
    return {
      id: md.thopter_machine ?? m.id,
      thopterId: md.thopter_id ?? '',
      createdAt: m.created_at ?? '',
      providerId: m.id,
      name: m.name,
    };
  }

  /** THOPTER_IMAGE, or the image the seed's metadata service kept in Redis. */
  private async image(): Promise<string> {
    const image =
      this.config.fly.image ??
      (await this.redis.hget(`${this.config.redisPrefix}:metadata`, 'THOPTER_IMAGE'));
    if (!image) {
      throw new ThopterError(
        'machine',
        `no thopter image is configured: set THOPTER_IMAGE, or run \`redis-cli HSET ${this.config.redisPrefix}:metadata THOPTER_IMAGE registry.fly.io/${this.config.fly.app}:TAG\``,
      );
    }
    return image;
  }

  /**
   * A free `thopter_data` volume in REGION (seed phase 2 reuses them), or a new one. A volume picked
   * here is claimed in Redis first, so concurrent creates, on this hub or another, never pick the
   * same one; a claim by the same machine (a resumed create) is its own.
   */
  private async claimVolume(
    owner: string,
    name: string,
    avoid: ReadonlySet<string> = new Set(),
    signal?: AbortSignal,
  ): Promise<string> {
    const { region, volumeSizeGb } = this.config.fly;
    const claim = (id: string) => `${this.config.redisPrefix}:fly:volume-claim:${id}`;
    // A shared list may predate a volume's release (a thopter destroyed a moment ago): before the
    // pool grows, a list asked for now gets the last word.
    for (const maxAgeMs of [VOLUME_LIST_MAX_AGE_MS, 0]) {
      for (const v of await this.volumes(maxAgeMs)) {
        if (v.name !== name || v.region !== region || v.attached_machine_id || v.state !== 'created')
          continue;
        if (avoid.has(v.id)) continue;
        const taken = await this.redis.set(claim(v.id), owner, 'EX', VOLUME_CLAIM_S, 'NX');
        if (taken === 'OK' || (await this.redis.get(claim(v.id))) === owner) return v.id;
      }
    }
    // Fly places a volume apart from every other of the same name unless told otherwise, and
    // refuses (412) once the region's zones are used up: a pool of thopter volumes outgrows them.
    const body = { name, region, size_gb: volumeSizeGb, require_unique_zone: false };
    for (let attempt = 1; ; attempt++) {
      try {
        const made = await this.api.createVolume(body, signal);
        await this.redis.set(claim(made.id), owner, 'EX', VOLUME_CLAIM_S);
        this.log.info({ volume: made.id, region, sizeGb: volumeSizeGb }, 'created a volume');
        return made.id;
      } catch (err) {
        // A 5xx may have made the volume anyway: it joins the pool unclaimed and a later create
        // picks it up, which is cheaper than a provision failed for want of a disk.
        const passing = err instanceof FlyApiError && (err.retryable || err.kind === 'conflict');
        if (!passing || attempt >= VOLUME_CREATE_TRIES) throw err;
        this.log.warn({ region, err: err.message, attempt }, 'could not create a volume: trying again');
        await sleep(1000 * 2 ** (attempt - 1), signal);
      }
    }
  }

  /**
   * The app's volumes, one request for all the creates that ask at once: volume requests count
   * against the app's one-a-second budget, and the Redis claims, not this list, keep two machines
   * off one volume (a stale entry at worst earns a 412 and another pick).
   */
  private volumes(maxAgeMs: number): Promise<FlyVolume[]> {
    // An in-flight list is shared: a burst of creates needs one answer, not one each.
    const last = this.volumeList;
    if (last && (!last.done || Date.now() - last.at < maxAgeMs)) return last.list;
    const entry = { at: Date.now(), done: false, list: this.api.listVolumes() };
    this.volumeList = entry;
    entry.list.then(
      () => (entry.done = true),
      () => {
        if (this.volumeList === entry) this.volumeList = undefined;
      },
    );
    return entry.list;
  }

  private releaseVolume(volumeId: string): Promise<number> {
    return this.redis.del(`${this.config.redisPrefix}:fly:volume-claim:${volumeId}`);
  }

  /**
   * The files every machine gets: the hubs' public keys, and a host key made here and pinned
   * under `pinKey` before the machine exists, so no hub ever has to trust a first connection.
   */
  private async baseFiles(pinKey: string): Promise<MachineFile[]> {
    const hostKey = newHostKey();
    await this.trust.pin(pinKey, hostKey.fingerprint);
    return [
      file('/etc/thopter/hub_authorized_keys', await this.trust.authorizedKeys(), 0o644),
      file('/etc/thopter/ssh_host_ed25519_key', hostKey.privateKey, 0o600),
    ];
  }

  private async files(spec: MachineSpec): Promise<MachineFile[]> {
    // Secrets travel as files the init hands to the thopter user with mode 600, not as env: a
    // machine's environment is readable by every process in it and shows in `fly machine status`.
    const files = [
      ...(await this.baseFiles(spec.id)),
      file('/etc/thopter/status-token', spec.statusToken, 0o600),
    ];
    if (spec.envFile) files.push(file('/tmp/.env.thopters', await readFile(spec.envFile), 0o600));
    if (spec.postCheckoutScript) {
      files.push(file('/tmp/post-checkout.sh', await readFile(spec.postCheckoutScript), 0o755));
    }
    return files;
  }

  async create(spec: MachineSpec, signal?: AbortSignal): Promise<MachineInfo> {
    // A resumed create (the hub died after asking Fly) finds the machine it made. A first one
    // skips the lookup: list requests share the app's one-a-second budget with every create.
    if (spec.resume) {
      await this.refresh();
      const existing = this.known.get(spec.id);
      if (existing) return this.info(existing);
    }

    const { config } = this;
    const name = `thopter-${spec.issueNumber ?? 'task'}-${spec.id}`;
    const image = await this.image();
    const body = (volume: string): CreateMachineBody => ({
      name,
      region: config.fly.region,
      config: {
        image,
        // Seed phase 2's environment, less the PAT (the clone phase delivers it as a file) and
        // with HUB_STATUS_URL in place of the metadata service's host.
        env: {
          APP_NAME: config.fly.app,
          THOPTER_ID: spec.thopterId,
          THOPTER_MACHINE: spec.id,
          THOPTER_ROLE: 'thopter',
          HUB_STATUS_URL: `${config.statusUrl}/api/thopters/${spec.thopterId}/status`,
          // The image's sshd listens where the hub connects (port 22 of the private address is
          // Fly's own SSH server, so the default is 2222).
          THOPTER_SSH_PORT: String(config.fly.sshPort),
          REPOSITORY: spec.repository,
          ISSUE_NUMBER: spec.issueNumber === undefined ? '' : String(spec.issueNumber),
          GIT_USER_NAME: spec.git.userName,
          GIT_USER_EMAIL: spec.git.userEmail,
          ...(config.machineEnv.skipFirewall
            ? { DANGEROUSLY_SKIP_FIREWALL: config.machineEnv.skipFirewall }
            : {}),
          ...(config.machineEnv.allowedDomains ? { ALLOWED_DOMAINS: config.machineEnv.allowedDomains } : {}),
        },
        guest: config.fly.guest,
        mounts: [{ volume, path: '/data' }],
        files,
        metadata: {
          ...this.marks('thopter'),
          thopter_id: spec.thopterId,
          thopter_machine: spec.id,
          thopter_request: spec.requestId,
        },
        // Seed: autostop off. The machine runs until the hub destroys it; a crash restarts it.
        restart: { policy: 'on-failure', max_retries: 3 },
        auto_destroy: false,
      },
    });
    const files = await this.files(spec);
    const avoid = new Set<string>();
    let made: FlyMachine | undefined;
    while (!made) {
      const volume = await this.claimVolume(spec.id, VOLUME_NAME, avoid, signal);
      try {
        made = await this.api.createMachine(body(volume), signal);
        this.log.info({ machine: spec.id, fly: made.id, name, volume }, 'created a Fly machine');
      } catch (err) {
        await this.releaseVolume(volume);
        // A create that may have happened (a 5xx, a dropped connection, or our own name already
        // taken) is looked up rather than repeated: one machine per thopter.
        const maybe = err instanceof FlyApiError && ['name-taken', 'server', 'network'].includes(err.kind);
        // A list asked for before the create could miss it: this one is asked for after.
        const found = maybe ? (await this.refresh(0, true), this.known.get(spec.id)) : undefined;
        if (found) return this.info(found);
        // The volume was taken meanwhile (412 "volume already claimed"), or its host is full:
        // another volume, or a new one, may do.
        const volumeProblem =
          err instanceof FlyApiError &&
          (err.kind === 'conflict' || err.kind === 'insufficient-capacity') &&
          /volume/i.test(err.message);
        if (!volumeProblem || avoid.size >= 3) throw err;
        avoid.add(volume);
        this.log.info({ volume, err: err.message }, 'trying another volume');
      }
    }
    this.known.set(spec.id, made);
    this.madeAt.set(spec.id, Date.now());
    return this.info(made);
  }

  async get(id: string): Promise<MachineInfo | null> {
    // A machine missing from a shared list gets a second look before it is called gone.
    const m = (await this.machine(id)) ?? (await this.refresh(0, true), this.known.get(id));
    return m ? this.info(m) : null;
  }

  async list(): Promise<MachineInfo[]> {
    await this.refresh(1000);
    return [...this.known.values()].map((m) => this.info(m));
  }

  async ready(id: string, signal?: AbortSignal): Promise<boolean> {
    const m = await this.machine(id);
    if (!m) throw new ThopterError('machine', `Fly machine for ${id} is not in the app's list`, true);
    try {
      // Fly holds this request until the machine has started (or 10 s passed), instead of polling.
      await this.api.waitMachine(m.id, 'started', { deadlineMs: 10_000, signal });
      // What the machine looks like once started (its address, its instance) is what the
      // transport connects to.
      const now = await this.api.getMachine(m.id, signal);
      if (!now || GONE.has(now.state))
        throw new ThopterError('machine', `Fly machine ${m.id} is gone`, false);
      this.known.set(id, now);
      this.madeAt.set(id, Date.now());
      return now.state === 'started';
    } catch (err) {
      if (!(err instanceof FlyApiError) || err.kind !== 'timeout') throw err;
      const now = await this.api.getMachine(m.id, signal);
      if (!now || GONE.has(now.state))
        throw new ThopterError('machine', `Fly machine ${m.id} is gone`, false);
      if (now.state === 'stopped' || now.state === 'failed') {
        // A boot can fail for passing reasons (a host under load, an image pull that timed out):
        // the machine is started again, twice at most, before the provision gives up on it.
        const restarts = this.restarts.get(id) ?? 0;
        if (restarts < MAX_BOOT_RESTARTS) {
          this.restarts.set(id, restarts + 1);
          this.log.warn(
            { machine: id, fly: m.id, state: now.state },
            'the machine stopped while booting: starting it again',
          );
          await this.api.startMachine(m.id, signal);
          return false;
        }
        throw new ThopterError(
          'machine',
          `Fly machine ${m.id} is ${now.state} instead of starting: see \`fly logs -a ${this.config.fly.app} -i ${m.id}\``,
          false,
        );
      }
      return false;
    }
  }

  /** Counted in Redis, so that a thopter's restarts add up across hubs and hub restarts. */
  private runRestartsKey(id: string): string {
    return `${this.config.redisPrefix}:fly:run-restarts:${id}`;
  }

  async keepUp(id: string): Promise<MachineUpkeep> {
    const listed = await this.machine(id);
    if (listed?.state === 'started') return { kind: 'running' };
    // The shared list may be seconds old (a start asked for since): ask Fly.
    const m = listed && (await this.api.getMachine(listed.id));
    if (!m || GONE.has(m.state)) return { kind: 'down', reason: 'its Fly machine is gone' };
    this.known.set(id, m);
    if (!DOWN.has(m.state)) return { kind: 'running' };
    const exit = m.events?.find((e) => e.type === 'exit' && e.request?.exit_event)?.request?.exit_event;
    if (exit?.requested_stop) {
      // Someone stopped it on purpose (`fly machine stop`, the Fly dashboard): the hub does not
      // overrule them by starting it, and the thopter cannot work on a stopped machine.
      return {
        kind: 'down',
        reason: `its Fly machine ${m.id} was stopped on request, not by the hub (\`fly machine stop\` or the Fly dashboard)`,
      };
    }
    const why =
      exit === undefined
        ? m.state
        : exit.oom_killed
          ? `${m.state}: out of memory`
          : `${m.state}: exit code ${exit.exit_code ?? 'unknown'}`;
    const key = this.runRestartsKey(id);
    const restarts = await this.redis.incr(key);
    await this.redis.expire(key, 7 * 24 * 3600);
    if (restarts > MAX_RUN_RESTARTS) {
      return {
        kind: 'down',
        reason: `its Fly machine ${m.id} is ${why} after ${MAX_RUN_RESTARTS} restarts: see \`fly logs -a ${this.config.fly.app} -i ${m.id}\``,
      };
    }
    await this.api.startMachine(m.id);
    this.log.warn(
      { machine: id, fly: m.id, state: m.state, exit },
      'the machine had stopped: started it again',
    );
    return {
      kind: 'restarted',
      reason: `its Fly machine ${m.id} was ${why}: started it again (${restarts} of ${MAX_RUN_RESTARTS})`,
    };
  }

  async destroy(id: string): Promise<void> {
    const m = await this.machine(id);
    if (!m) return;
    await this.deleteMachine(m);
    this.known.delete(id);
    this.madeAt.delete(id);
    this.restarts.delete(id);
    await this.redis.del(this.runRestartsKey(id));
  }

  /** Stop, wait for it to stop, delete: Fly's order. Its volume then goes back to the pool. */
  private async deleteMachine(listed: FlyMachine): Promise<void> {
    // The listed state may be old (a machine made a moment ago is starting by now): ask.
    const m = await this.api.getMachine(listed.id);
    if (!m || GONE.has(m.state)) return;
    let stopped = m.state === 'stopped' || m.state === 'created';
    if (!stopped) {
      try {
        await this.api.stopMachine(m.id);
        // Fly refuses (400) a wait for `stopped` without the instance it is to stop.
        await this.api.waitMachine(m.id, 'stopped', { deadlineMs: STOP_WAIT_MS, instanceId: m.instance_id });
        stopped = true;
      } catch (err) {
        if (err instanceof FlyApiError && err.kind === 'not-found') return;
        this.log.warn({ fly: m.id, err: messageOf(err) }, 'the machine did not stop: deleting it with force');
      }
    }
    try {
      await this.api.deleteMachine(m.id, { force: !stopped });
      // Fly detaches the volume only once the machine is destroyed: until then every list shows it
      // taken, and a launch right after this would grow the pool instead of reusing it.
      await this.api.waitMachine(m.id, 'destroyed', { deadlineMs: DESTROY_WAIT_MS });
    } catch (err) {
      if (!(err instanceof FlyApiError && (err.kind === 'not-found' || err.kind === 'timeout'))) throw err;
      if (err.kind === 'timeout') this.log.warn({ fly: m.id }, 'the machine is slow to be destroyed');
    }
    this.volumeList = undefined;
    await this.trust.forget(pinKey(m));
    // Its volume goes back to the pool at once, not when the claim made for this machine expires.
    for (const mount of m.config?.mounts ?? []) if (mount.volume) await this.releaseVolume(mount.volume);
    this.log.info({ fly: m.id, name: m.name }, 'deleted a Fly machine');
  }

  private address(m: FlyMachine): string {
    if (this.config.fly.sshHost.includes('{private_ip}') && !m.private_ip) {
      throw new ThopterError('transport', `Fly machine ${m.id} has no private IP yet`, true);
    }
    return this.config.fly.sshHost
      .replaceAll('{id}', m.id)
      .replaceAll('{app}', this.config.fly.app)
      .replaceAll('{private_ip}', m.private_ip ?? '');
  }

  private connect(m: FlyMachine, label: string) {
    return connectSsh({
      host: this.address(m),
      port: this.config.fly.sshPort,
      username: SSH_USER,
      privateKey: this.key.privateKey,
      verifyHostKey: (fingerprint) => this.trust.verify(pinKey(m), fingerprint),
      paths: FLY_PATHS,
      label,
    });
  }

  async transport(id: string): Promise<Transport> {
    const m = await this.machine(id);
    if (!m) throw new ThopterError('machine', `Fly machine for ${id} is not in the app's list`, true);
    return this.connect(m, `machine ${id} (${m.id})`);
  }

  async snapshot(id: string, via?: Transport): Promise<SessionSnapshot> {
    const t = via ?? (await this.transport(id));
    try {
      // The pane's first line says whether the shell in it runs something (the agent).
      const script =
        'pid=$(tmux display-message -p -t "$1" "#{pane_pid}") || exit 3; ' +
        'if pgrep -P "$pid" >/dev/null; then echo busy; else echo free; fi; tmux capture-pane -p -t "$1"';
      const r = await t.exec(['sh', '-c', script, 'sh', SESSION], { timeoutMs: 30_000 });
      if (r.exitCode !== 0) return { screen: '', agentRunning: false, sessionAlive: false };
      const newline = r.stdout.indexOf('\n');
      return {
        agentRunning: r.stdout.slice(0, newline) === 'busy',
        screen: r.stdout.slice(newline + 1).replace(/\n$/, ''),
        sessionAlive: true,
      };
    } finally {
      if (!via) await t.close();
    }
  }

  /** Golden claudes are machines named `gc-{name}` (the seed's naming, so its machines count too). */
  private async goldenMachines(maxAgeMs = 0): Promise<Map<string, FlyMachine>> {
    const all = await this.refresh(maxAgeMs);
    return new Map(
      all
        .filter((m) => m.name.startsWith('gc-') && !GONE.has(m.state))
        .map((m) => [m.name.slice(3), m] as const)
        .filter(([name]) => GOLDEN_NAME.test(name)),
    );
  }

  async goldenClaudes(): Promise<string[]> {
    return [...(await this.goldenMachines()).keys()].sort();
  }

  async listGoldenClaudes(): Promise<GoldenClaudeInfo[]> {
    return [...(await this.goldenMachines())]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([name, m]) => ({ name, state: m.state, location: `Fly machine ${m.id} (${m.name})` }));
  }

  async goldenClaude(name: string): Promise<GoldenClaude | null> {
    // Many provisions copy at once: they share a list up to two seconds old.
    const m = (await this.goldenMachines(2000)).get(name);
    if (!m) return null;
    if (m.state !== 'started') {
      throw new ThopterError(
        'machine',
        `golden claude gc-${name} is ${m.state}: start it with \`fly machine start ${m.id} -a ${this.config.fly.app}\``,
        false,
      );
    }
    const transport = await this.connect(m, `golden claude gc-${name} (${m.id})`);
    return {
      name,
      transport,
      // Copying a home while Claude writes to it would copy a half-written session.
      busy: async () => {
        const r = await transport.exec(['pgrep', '-x', 'claude'], { timeoutMs: 30_000 });
        return r.exitCode === 0
          ? `Claude is running on gc-${name}: exit it there, then launch again`
          : undefined;
      },
    };
  }

  async createGoldenClaude(name: string): Promise<GoldenClaudeInfo> {
    if (!GOLDEN_NAME.test(name)) throw new ThopterError('bad-input', `"${name}" is not a golden claude name`);
    const existing = (await this.goldenMachines()).get(name);
    if (existing)
      return { name, state: existing.state, location: `Fly machine ${existing.id} (${existing.name})` };
    const image = await this.image();
    const volume = await this.claimVolume(`gc-${name}`, GOLDEN_VOLUME_NAME);
    try {
      const m = await this.api.createMachine({
        name: `gc-${name}`,
        region: this.config.fly.region,
        config: {
          image,
          env: {
            APP_NAME: this.config.fly.app,
            THOPTER_ROLE: 'golden',
            THOPTER_SSH_PORT: String(this.config.fly.sshPort),
          },
          guest: this.config.fly.guest,
          mounts: [{ volume, path: '/data' }],
          files: await this.baseFiles(`gc-${name}`),
          metadata: { ...this.marks('golden'), thopter_gc: name },
          restart: { policy: 'always' },
          auto_destroy: false,
        },
      });
      this.log.info({ gc: name, fly: m.id }, 'created a golden claude machine');
      this.listing = undefined; // the next list must show it
      return { name, state: m.state, location: `Fly machine ${m.id} (${m.name})` };
    } catch (err) {
      await this.releaseVolume(volume);
      throw err;
    }
  }

  async destroyGoldenClaude(name: string): Promise<boolean> {
    const m = (await this.goldenMachines()).get(name);
    if (!m) return false;
    await this.deleteMachine(m);
    this.listing = undefined;
    // A golden claude's volume holds only its login: recreating it starts clean (seed: recreate-gc.sh).
    for (const mount of m.config?.mounts ?? []) {
      if (mount.volume) await this.deleteVolumeWhenDetached(mount.volume);
    }
    return true;
  }

  private async deleteVolumeWhenDetached(volumeId: string): Promise<void> {
    for (let i = 0; i < 30; i++) {
      try {
        await this.api.deleteVolume(volumeId);
        return;
      } catch (err) {
        if (err instanceof FlyApiError && err.kind === 'not-found') return;
        if (i === 29) throw err;
        await sleep(1000);
      }
    }
  }

  async close(): Promise<void> {}
}
