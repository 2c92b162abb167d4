import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from './wait.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface LinkEnd {
  ns: string;
  /** The interface's name in that namespace. */
  dev: string;
  addresses: string[];
}

/** What commands in a namespace get, then the caller's env; nothing of the test process leaks in. */
const BASE_ENV = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  HOME: '/root',
  LANG: 'C.UTF-8',
};

/**
 * Network namespaces for one test file, named uniquely for the run and joined by veth pairs:
 * nothing they do reaches the host's network. `close` (and, failing that, process exit) kills
 * what runs in them and deletes them, which deletes their interfaces too. Needs root.
 */
export class NetnsLab {
  /** Short, so that names built from it stay readable; unique per process and run. */
  readonly id = `fw${process.pid.toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  private readonly namespaces: string[] = [];
  private readonly children = new Set<ChildProcess>();
  private closed = false;

  constructor() {
    labs.add(this);
    onProcessExit();
  }

  /**
   * A namespace with loopback up. With `resolvConf`, `ip netns exec` shows its programs that file
   * as /etc/resolv.conf (it bind-mounts /etc/netns/NAME/*).
   */
  addNamespace(name: string, opts: { resolvConf?: string } = {}): string {
    const ns = `${this.id}-${name}`;
    ip(['netns', 'add', ns]);
    this.namespaces.push(ns);
    ip(['-n', ns, 'link', 'set', 'lo', 'up']);
    if (opts.resolvConf !== undefined) {
      mkdirSync(path.join('/etc/netns', ns), { recursive: true });
      writeFileSync(path.join('/etc/netns', ns, 'resolv.conf'), opts.resolvConf);
    }
    return ns;
  }

  /**
   * Joins two namespaces with a veth pair, up, with the given addresses (CIDR notation) on each
   * side. IPv6 addresses skip duplicate address detection, so they work at once.
   */
  link(a: LinkEnd, b: LinkEnd): void {
    ip(['-n', a.ns, 'link', 'add', a.dev, 'type', 'veth', 'peer', 'name', b.dev, 'netns', b.ns]);
    for (const side of [a, b]) {
      for (const address of side.addresses) {
        const nodad = address.includes(':') ? ['nodad'] : [];
        ip(['-n', side.ns, 'addr', 'add', address, 'dev', side.dev, ...nodad]);
      }
      ip(['-n', side.ns, 'link', 'set', side.dev, 'up']);
    }
  }

  route(ns: string, args: string[]): void {
    ip(['-n', ns, 'route', 'add', ...args]);
  }

  /** Runs a command in the namespace and collects its output; never rejects. */
  run(
    ns: string,
    argv: string[],
    opts: { env?: Record<string, string>; input?: string } = {},
  ): Promise<RunResult> {
    return new Promise((resolve) => {
      const child = execFile(
        'ip',
        ['netns', 'exec', ns, ...argv],
        { cwd: ROOT, env: { ...BASE_ENV, ...opts.env }, maxBuffer: 16 << 20 },
        (err, stdout, stderr) => {
          const code = err ? (err as { code?: unknown }).code : 0;
          resolve({ code: typeof code === 'number' ? code : -1, stdout, stderr });
        },
      );
      // A command that exits without reading its input must not fail the test with EPIPE.
      child.stdin?.on('error', () => {});
      child.stdin?.end(opts.input ?? '');
    });
  }

  /**
   * Starts a long-running command in the namespace (`ip netns exec` execs it, so the child is the
   * command itself) and waits until it prints `ready` on a line of its own, when given.
   */
  async spawn(
    ns: string,
    argv: string[],
    opts: { env?: Record<string, string>; ready?: string } = {},
  ): Promise<Spawned> {
    const child = spawn('ip', ['netns', 'exec', ns, ...argv], {
      cwd: ROOT,
      env: { ...BASE_ENV, ...opts.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.children.add(child);
    const spawned = new Spawned(child);
    child.once('exit', () => this.children.delete(child));
    if (opts.ready !== undefined) {
      const ready = opts.ready;
      await waitFor(
        `${argv.join(' ')} in ${ns} to print "${ready}"`,
        () => {
          if (spawned.lines().includes(ready)) return true;
          if (spawned.exited) throw new Error(`it exited: ${spawned.stdout}${spawned.stderr}`);
          return false;
        },
        { timeoutMs: 30_000, intervalMs: 20 },
      );
    }
    return spawned;
  }

  /** Kills every process it started, deletes its namespaces and their /etc/netns folders. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(
      [...this.children].map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            child.once('exit', () => resolve());
            child.kill('SIGKILL');
          }),
      ),
    );
    this.deleteNamespaces();
    labs.delete(this);
  }

  /** Synchronous, for process exit too. */
  deleteNamespaces(): void {
    for (const ns of this.namespaces.splice(0)) {
      try {
        ip(['netns', 'delete', ns]);
      } catch {
        // already gone
      }
      rmSync(path.join('/etc/netns', ns), { recursive: true, force: true });
    }
    try {
      rmdirSync('/etc/netns'); // only if no one else keeps anything there
    } catch {
      // not empty, or absent
    }
  }

  killAll(): void {
    for (const child of this.children) child.kill('SIGKILL');
  }
}

/** A process running in a namespace, with its output so far. */
export class Spawned {
  stdout = '';
  stderr = '';
  exited = false;

  constructor(readonly child: ChildProcess) {
    child.stdout?.setEncoding('utf8').on('data', (d: string) => (this.stdout += d));
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
    child.stdin?.on('error', () => {}); // it may exit before reading what it was sent
    child.once('exit', () => (this.exited = true));
  }

  lines(): string[] {
    return this.stdout.split('\n');
  }

  write(text: string): void {
    this.child.stdin?.write(text);
  }
}

function ip(args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Labs not closed yet: their processes and namespaces go when the test process exits anyway. */
const labs = new Set<NetnsLab>();
let exitHookSet = false;

function onProcessExit() {
  if (exitHookSet) return;
  exitHookSet = true;
  process.once('exit', () => {
    for (const lab of labs) {
      lab.killAll();
      lab.deleteNamespaces();
    }
  });
}
