import { access, appendFile, mkdir, readFile, writeFile, chmod } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { run } from './run.js';
import type { ExecOptions, ExecResult, Interactive, MachinePaths, Transport } from '../types.js';

/**
 * The environment every command on a local machine starts from. It is built from nothing, not
 * inherited: the hub's own environment holds HUB_API_TOKEN and the GitHub tokens, and nothing in a
 * thopter may see them.
 */
export function machineEnv(home: string, tmuxDir: string): Record<string, string> {
  return {
    PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
    HOME: home,
    USER: process.env.USER ?? 'thopter',
    LOGNAME: process.env.USER ?? 'thopter',
    SHELL: '/bin/bash',
    LANG: process.env.LANG ?? 'C.UTF-8',
    TERM: 'xterm-256color',
    // Each local machine has its own tmux server, as each Fly machine has: `tmux` in a phase
    // reaches this thopter's session and no other.
    TMUX_TMPDIR: tmuxDir,
    GIT_TERMINAL_PROMPT: '0',
  };
}

/** Runs commands as child processes of the hub, confined to one machine folder. */
export class LocalTransport implements Transport {
  readonly isOpen = true;

  constructor(
    /** The machine's folder: every path this transport touches is inside it. */
    private readonly root: string,
    readonly paths: MachinePaths,
    private readonly env: Record<string, string>,
  ) {}

  private inside(p: string): string {
    const resolved = path.resolve(p);
    if (resolved !== this.root && !resolved.startsWith(this.root + path.sep)) {
      throw new Error(`path ${p} is outside this machine (${this.root})`);
    }
    return resolved;
  }

  async exec(argv: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const [file, ...args] = argv;
    if (!file) throw new Error('exec needs a command');
    return run(file, args, {
      cwd: opts.cwd ? this.inside(opts.cwd) : this.paths.home,
      env: { ...this.env, ...opts.env },
      input: opts.input,
      stdout: opts.stdout,
      timeoutMs: opts.timeoutMs,
      signal: opts.signal,
    });
  }

  async open(argv: string[]): Promise<Interactive> {
    const [file, ...args] = argv;
    if (!file) throw new Error('open needs a command');
    const child = spawn(file, args, {
      cwd: this.paths.home,
      env: this.env,
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    const done = new Promise<number | null>((resolve) => {
      child.once('error', () => resolve(null));
      child.once('close', (code) => resolve(code));
    });
    child.stdin.on('error', () => {});
    return {
      stdin: child.stdin,
      stdout: child.stdout,
      done,
      close: () => {
        child.stdin.end();
        child.kill('SIGTERM');
      },
    };
  }

  async writeFile(p: string, data: string | Buffer, mode = 0o644): Promise<void> {
    const target = this.inside(p);
    await mkdir(path.dirname(target), { recursive: true });
    await writeFile(target, data, { mode });
    await chmod(target, mode); // writeFile's mode applies only to new files
  }

  async appendFile(p: string, data: string): Promise<void> {
    const target = this.inside(p);
    await mkdir(path.dirname(target), { recursive: true });
    await appendFile(target, data);
  }

  exists(p: string): Promise<boolean> {
    return access(this.inside(p)).then(
      () => true,
      () => false,
    );
  }

  readFile(p: string): Promise<Buffer> {
    return readFile(this.inside(p));
  }

  async close(): Promise<void> {}
}
