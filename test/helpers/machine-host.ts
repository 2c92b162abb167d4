import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FlyMachine } from '../fakes/fly.js';
import { waitFor } from './wait.js';

const INIT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/machine-init.sh');

/** One file Fly writes into a machine at creation (`config.files` of the Machines API). */
export interface MachineFile {
  guest_path: string;
  /** The content, base64. */
  raw_value: string;
  /** Default 0o644. */
  mode?: number;
}

/** What a machine boots from: the Fly machine's id and `config.env` / `config.files`. */
export interface MachineBoot {
  id: string;
  env?: Record<string, string>;
  files?: MachineFile[];
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** The paths a machine has to itself; a delivered file must land under one of them. */
const PRIVATE_DIRS: readonly (readonly [guest: string, dir: string])[] = [
  ['/data', 'data'],
  ['/thopter', 'thopter'],
  ['/etc/thopter', 'etc-thopter'],
  ['/tmp', 'tmp'],
];

/** The machine's processes get this, then the machine's env; nothing of the test process leaks in. */
export const BASE_ENV = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  HOME: '/root',
  LANG: 'C.UTF-8',
};

interface Machine {
  id: string;
  address: string;
  dir: string;
  ctl: string;
  child: ChildProcess;
  /** Host pid of the machine's PID 1 (the init script), once unshare has forked it. */
  init?: number;
  ended: boolean;
  exited: Promise<void>;
  stopping?: Promise<void>;
}

/**
 * Fly machines running the thopter image, on this host: each one is the Fly stand-in
 * (test/fixtures/machine-init.sh) as PID 1 of its own mount and PID namespaces, with private
 * /data, /thopter, /etc/thopter and /tmp, a real OpenSSH sshd with the image's sshd_config on its
 * own loopback address 127.0.0.N and the shared port, and the image's real init (thopter/init.sh).
 * Killing that PID 1 makes the kernel kill everything else in the machine (sshd, sessions, the tmux
 * server), which is how `stop` leaves nothing behind.
 *
 * Needs root. Plug it into the fake Fly API: `onStart: (m) => host.boot(m)`,
 * `onStop: (m) => host.stop(m.id)`.
 */
export class MachineHost {
  private readonly port: number;
  private readonly baseDir: string;
  private readonly machines = new Map<string, Machine>();
  private readonly finalLogins = new Map<string, number>();
  private holdAll = false;
  private readonly held = new Set<string>();
  /** Ids whose start is past the duplicate check but not yet in `machines`. */
  private readonly claimed = new Set<string>();

  constructor(opts: { port: number; baseDir: string }) {
    this.port = opts.port;
    this.baseDir = opts.baseDir;
  }

  /** Boots a machine of the fake Fly API as its config says (env, files): see start. */
  boot(m: FlyMachine): Promise<{ privateIp: string }> {
    return this.start({
      id: m.id,
      env: m.config.env,
      files: m.config.files?.map((f) => ({ ...f, raw_value: f.raw_value ?? '' })),
    });
  }

  /** Boots a machine: namespaces, files, init, sshd. Resolves with its address once sshd accepts TCP connections. */
  async start(boot: MachineBoot): Promise<{ privateIp: string }> {
    const { id } = boot;
    if (!/^[A-Za-z0-9_-]+$/.test(id)) throw new Error(`machine id ${JSON.stringify(id)} is not a plain name`);
    if (this.machines.has(id) || this.claimed.has(id)) throw new Error(`machine ${id} is already running`);
    this.claimed.add(id);
    let address: string;
    try {
      await ensureThopterUser();
      address = await claimAddress(this.port);
    } finally {
      // Nothing below awaits before the machine is in `machines`, so no second start slips in.
      this.claimed.delete(id);
    }
    const dir = path.join(this.baseDir, id);
    const ctl = path.join(dir, 'ctl');
    const fsDir = path.join(dir, 'fs');
    let child: ChildProcess;
    try {
      rmSync(dir, { recursive: true, force: true });
      for (const [, sub] of PRIVATE_DIRS) mkdirSync(path.join(fsDir, sub), { recursive: true, mode: 0o755 });
      mkdirSync(ctl, { recursive: true, mode: 0o700 });
      for (const file of boot.files ?? []) deliver(id, fsDir, file);
      if (this.holdAll || this.held.has(id)) writeFileSync(path.join(ctl, 'hold-ready'), '');
      // Output goes to a file, not a pipe: the machine may outlive a test's handle accounting.
      const out = openSync(path.join(dir, 'boot.log'), 'a');
      try {
        child = spawn(
          'unshare',
          [
            ...['--mount', '--propagation', 'private', '--pid', '--fork', '--mount-proc', '--kill-child'],
            ...['--', 'bash', INIT, fsDir, ctl, address, String(this.port)],
          ],
          { env: { ...boot.env, ...BASE_ENV }, stdio: ['ignore', out, out] },
        );
      } finally {
        closeSync(out);
      }
    } catch (err) {
      addresses.delete(address);
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    const machine: Machine = { id, address, dir, ctl, child, ended: false, exited: Promise.resolve() };
    machine.exited = new Promise<void>((resolve) => {
      const end = () => {
        machine.ended = true;
        live.delete(machine);
        resolve();
      };
      child.once('exit', end);
      child.once('error', end);
    });
    this.machines.set(id, machine);
    live.add(machine);
    onProcessExit();

    try {
      const outcome = await waitFor(
        `machine ${id}'s sshd to accept connections on ${address}:${this.port}`,
        async () => {
          if (machine.ended) return 'ended';
          machine.init ??= initPid(child);
          return machine.init !== undefined && (await accepts(address, this.port)) && 'listening';
        },
        { timeoutMs: 30_000, intervalMs: 20 },
      );
      if (outcome === 'ended') throw new Error(`machine ${id} ended while booting`);
    } catch (err) {
      const logs = `${readText(path.join(dir, 'boot.log'))}${readText(path.join(ctl, 'sshd.log'))}`;
      await this.stop(id);
      throw new Error(`${(err as Error).message}\n--- boot and sshd log ---\n${logs}`, { cause: err });
    }
    return { privateIp: address };
  }

  /** Kills everything of that machine (sshd, tmux server, any process left in its namespace) and removes its dirs. Idempotent. */
  stop(id: string): Promise<void> {
    const machine = this.machines.get(id);
    if (!machine) return Promise.resolve();
    machine.stopping ??= (async () => {
      this.finalLogins.set(id, countLogins(machine.ctl));
      if (!machine.ended) {
        // SIGKILL on a PID namespace's init takes every process of the namespace with it; unshare
        // exits only once that init is reaped, i.e. once the namespace is empty. Before the fork,
        // killing unshare is enough (--kill-child).
        machine.init ??= initPid(machine.child);
        try {
          if (machine.init !== undefined) process.kill(machine.init, 'SIGKILL');
          else machine.child.kill('SIGKILL');
        } catch {
          // already gone
        }
        await machine.exited;
      }
      rmSync(machine.dir, { recursive: true, force: true });
      addresses.delete(machine.address);
      this.machines.delete(id);
    })();
    return machine.stopping;
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.machines.keys()].map((id) => this.stop(id)));
  }

  /** Runs a shell command inside the machine's namespaces as root (for test assertions: read files, ps). */
  run(id: string, script: string): Promise<RunResult> {
    const machine = this.machines.get(id);
    if (!machine || machine.ended || machine.init === undefined) {
      return Promise.reject(new Error(`machine ${id} is not running`));
    }
    return runInNamespace(machine.init, script);
  }

  /** Number of accepted SSH logins so far for that machine (from sshd's log); kept after `stop`. */
  logins(id: string): number {
    const machine = this.machines.get(id);
    if (machine && !machine.stopping) return countLogins(machine.ctl);
    const final = this.finalLogins.get(id);
    if (final === undefined) throw new Error(`no machine ${id} was started`);
    return final;
  }

  /**
   * Keeps a machine booting: its init stops before writing /thopter/ready until `release`. With an
   * id, that machine (before or while it boots); without, every machine started from now on.
   */
  holdReady(id?: string): void {
    if (id === undefined) {
      this.holdAll = true;
      return;
    }
    this.held.add(id);
    const machine = this.machines.get(id);
    if (machine && !machine.ended) writeFileSync(path.join(machine.ctl, 'hold-ready'), '');
  }

  /** Lets a held machine (or, without id, every held machine) finish booting; ends `holdReady()`. */
  release(id?: string): void {
    if (id === undefined) {
      this.holdAll = false;
      this.held.clear();
    } else {
      this.held.delete(id);
    }
    for (const machine of this.machines.values()) {
      if (id === undefined || machine.id === id)
        rmSync(path.join(machine.ctl, 'hold-ready'), { force: true });
    }
  }
}

/** Writes a delivered file into the machine's own directory that plays its guest path. */
function deliver(id: string, fsDir: string, file: MachineFile) {
  const guest = path.posix.normalize(file.guest_path);
  const owner = PRIVATE_DIRS.find(([dir]) => guest.startsWith(`${dir}/`));
  if (!path.posix.isAbsolute(guest) || !owner) {
    throw new Error(
      `machine ${id}: cannot deliver ${file.guest_path}: only /data, /thopter, /etc/thopter and /tmp are private to a machine`,
    );
  }
  if (typeof file.raw_value !== 'string') {
    throw new Error(
      `machine ${id}: ${file.guest_path} has no raw_value (secret_name files are not supported)`,
    );
  }
  const target = path.join(fsDir, owner[1], guest.slice(owner[0].length + 1));
  mkdirSync(path.dirname(target), { recursive: true, mode: 0o755 });
  writeFileSync(target, Buffer.from(file.raw_value, 'base64'));
  chmodSync(target, file.mode ?? 0o644);
}

/** Runs a shell command as root in the mount and PID namespaces of the process `pid` (host pid). */
export function runInNamespace(pid: number, script: string): Promise<RunResult> {
  const args = ['--target', String(pid), '--mount', '--pid', '--wd=/', '--', 'bash', '-c', script];
  return new Promise((resolve, reject) => {
    execFile('nsenter', args, { env: BASE_ENV, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
      const code = err ? (err as { code?: unknown }).code : 0;
      if (typeof code !== 'number') reject(err ?? new Error('nsenter gave no exit code'));
      else resolve({ code, stdout, stderr });
    });
  });
}

/** unshare's only child is the namespace's PID 1 (`unshare --pid --fork`). */
export function initPid(child: ChildProcess): number | undefined {
  if (child.pid === undefined) return undefined;
  const first = readText(`/proc/${child.pid}/task/${child.pid}/children`).trim().split(/\s+/)[0];
  return first ? Number(first) : undefined;
}

function countLogins(ctl: string): number {
  return readText(path.join(ctl, 'sshd.log')).match(/Accepted publickey for thopter /g)?.length ?? 0;
}

function readText(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function accepts(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

function canListen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** Loopback addresses in use by machines of this process; 127.0.0.1 is left to the hub and fakes. */
const addresses = new Set<string>();
let nextHost = 2;

/** A 127.0.0.N whose port is free (another test process may run machines too). */
async function claimAddress(port: number): Promise<string> {
  for (let tries = 0; tries < 253; tries++) {
    const address = `127.0.0.${nextHost}`;
    nextHost = nextHost >= 254 ? 2 : nextHost + 1;
    if (addresses.has(address)) continue;
    addresses.add(address);
    if (await canListen(address, port)) return address;
    addresses.delete(address);
  }
  throw new Error(`no loopback address 127.0.0.2-254 has port ${port} free`);
}

let userReady: Promise<void> | undefined;

/**
 * The image's `thopter` user, created on the host once (machines share /etc/passwd). Tolerates a
 * second test process doing the same: useradd and usermod fail while the other holds the lock.
 */
export function ensureThopterUser(): Promise<void> {
  userReady ??= waitFor(
    'the thopter user with an unlocked account',
    async () => {
      if ((await exec('id', ['-u', 'thopter'])).code !== 0) {
        await exec('useradd', [
          ...['--system', '--home-dir', '/data/thopter', '--no-create-home', '--shell', '/bin/bash'],
          'thopter',
        ]);
      }
      const shadow = await exec('getent', ['shadow', 'thopter']);
      if (shadow.code !== 0) return false;
      // With UsePAM no, OpenSSH refuses every login to an account whose password starts with '!'.
      if (shadow.stdout.split(':')[1] === '*') return true;
      await exec('usermod', ['-p', '*', 'thopter']);
      return false;
    },
    { timeoutMs: 30_000, intervalMs: 100 },
  ).then(
    () => undefined,
    (err: unknown) => {
      userReady = undefined;
      throw err;
    },
  );
  return userReady;
}

function exec(file: string, args: string[]): Promise<RunResult> {
  return new Promise((resolve) => {
    execFile(file, args, { env: BASE_ENV }, (err, stdout, stderr) => {
      const code = err ? (err as { code?: unknown }).code : 0;
      resolve({ code: typeof code === 'number' ? code : -1, stdout, stderr });
    });
  });
}

/** Machines of every host in this process, killed if the process exits without stopping them. */
const live = new Set<Machine>();
let exitHookSet = false;

function onProcessExit() {
  if (exitHookSet) return;
  exitHookSet = true;
  process.once('exit', () => {
    for (const machine of live) {
      try {
        if (machine.init !== undefined) process.kill(machine.init, 'SIGKILL');
        else machine.child.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  });
}
