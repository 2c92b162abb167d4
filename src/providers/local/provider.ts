import { existsSync } from 'node:fs';
import { appendFile, copyFile, mkdir, readdir, readFile, rm, stat, writeFile, chmod } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../../log.js';
import { parseTurns, TURNS_FILE } from '../../status/turns.js';
import { TranscriptUsageReader } from '../../usage/reader.js';
import {
  GOLDEN_NAME,
  SESSION,
  type GoldenClaude,
  type GoldenClaudeInfo,
  type MachineInfo,
  type MachinePaths,
  type MachineSpec,
  type Provider,
  type SessionSnapshot,
} from '../types.js';
import { run } from './run.js';
import { LocalTransport, machineEnv } from './transport.js';

/** A tmux call that takes longer than this is stuck: failing it lets the phase retry. */
const TMUX_TIMEOUT_MS = 30_000;
/** For ps and pgrep, which need nothing of the hub's environment. */
const HOST_ENV = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
const MACHINE_ID = /^[a-z0-9]{4,32}$/;
/** Unix socket paths are limited to 108 bytes; tmux puts its socket at $TMUX_TMPDIR/tmux-UID/default. */
const MAX_SOCKET_PATH = 100;

const BASHRC = `# Written by the thopter hub when this machine was created.
[ -f ~/.bash_aliases ] && . ~/.bash_aliases
[ -f ~/.thopter_env ] && . ~/.thopter_env
`;
const BASH_ALIASES = `alias yolo-claude='claude --dangerously-skip-permissions'\n`;
/** Seed: .env.thopters is sourced with auto-export, so every variable in it reaches the agent. */
const THOPTER_ENV = `if [ -f ~/workspace/.env.thopters ]; then set -a; . ~/workspace/.env.thopters; set +a; fi\n`;

interface MachineFile {
  id: string;
  thopterId: string;
  createdAt: string;
}

/**
 * The embedded default: a machine is a folder under DATA_DIR/thopters/{id} standing for the
 * thopter's /data/thopter, with its own tmux server. No isolation and no firewall: it is for one
 * trusted user on their own computer.
 */
export class LocalProvider implements Provider {
  readonly name = 'local' as const;
  readonly hubObserves = true;
  private readonly machinesDir: string;
  private readonly goldenDir: string;
  /** One per machine: each remembers how far it read, so a snapshot reads only what the agent appended. */
  private readonly usageReaders = new Map<string, TranscriptUsageReader>();

  constructor(
    dataDir: string,
    private readonly log: Logger,
    /** THOPTER_AGENT_COMMAND: checked at start, since the hub and its machines share one PATH. */
    private readonly agentCommand?: string,
  ) {
    this.machinesDir = path.join(dataDir, 'thopters');
    this.goldenDir = path.join(dataDir, 'golden');
  }

  async start(): Promise<void> {
    const program = this.agentCommand?.trim().split(/\s+/)[0] ?? '';
    // Only a plain program name is checked: a word the shell would expand or assign is its own.
    if (!/^[\w@%+:,./-]+$/.test(program)) return;
    const found = await run('bash', ['-c', 'command -v -- "$1"', 'bash', program], {
      env: HOST_ENV,
      timeoutMs: TMUX_TIMEOUT_MS,
    });
    if (found.exitCode !== 0) {
      this.log.warn(
        { program },
        `THOPTER_AGENT_COMMAND starts with "${program}", which is not on PATH: every thopter will fail at launch-agent. Install Claude Code (scripts/hub.sh does) or fix THOPTER_AGENT_COMMAND`,
      );
    }
  }

  private dir(id: string): string {
    if (!MACHINE_ID.test(id)) throw new Error(`"${id}" is not a local machine id`);
    return path.join(this.machinesDir, id);
  }

  private layout(id: string) {
    const dir = this.dir(id);
    const home = path.join(dir, 'home');
    const paths: MachinePaths = {
      home,
      workspace: path.join(home, 'workspace'),
      log: path.join(dir, 'log'),
      ready: path.join(dir, 'ready'),
    };
    return { dir, paths, tmux: path.join(dir, 'tmux'), meta: path.join(dir, 'machine.json') };
  }

  async create(spec: MachineSpec): Promise<MachineInfo> {
    const { dir, paths, tmux, meta } = this.layout(spec.id);
    const socket = path.join(tmux, `tmux-${process.getuid?.() ?? 0}`, 'default');
    if (socket.length > MAX_SOCKET_PATH) {
      throw new Error(
        `DATA_DIR is too deep for tmux's socket (${socket.length} characters, at most ${MAX_SOCKET_PATH}): use a shorter DATA_DIR`,
      );
    }
    const fresh = !existsSync(dir);
    await mkdir(paths.workspace, { recursive: true, mode: 0o700 });
    await mkdir(tmux, { recursive: true, mode: 0o700 });
    let info: MachineFile;
    if (existsSync(meta)) {
      info = JSON.parse(await readFile(meta, 'utf8')) as MachineFile;
    } else {
      info = { id: spec.id, thopterId: spec.thopterId, createdAt: new Date().toISOString() };
      await writeFile(meta, JSON.stringify(info));
    }
    const step = (msg: string) => appendFile(paths.log, `${new Date().toISOString()} [init] ${msg}\n`);
    await step(`machine ${spec.id} for thopter ${spec.thopterId}`);

    // What the thopter image's init does on Fly (seed phase 3), done here by the hub.
    await writeSecret(path.join(paths.home, '.thopter', 'status-token'), spec.statusToken);
    await writeFile(path.join(paths.home, '.bashrc'), BASHRC);
    await writeFile(path.join(paths.home, '.bash_profile'), '[ -f ~/.bashrc ] && . ~/.bashrc\n');
    await writeFile(path.join(paths.home, '.bash_aliases'), BASH_ALIASES);
    await writeFile(path.join(paths.home, '.thopter_env'), THOPTER_ENV);
    if (spec.envFile) {
      await copyFile(spec.envFile, path.join(paths.workspace, '.env.thopters'));
      await chmod(path.join(paths.workspace, '.env.thopters'), 0o600);
      await step('placed .env.thopters in the workspace');
    }
    if (spec.postCheckoutScript) {
      await copyFile(spec.postCheckoutScript, path.join(paths.workspace, 'post-checkout.sh'));
      await chmod(path.join(paths.workspace, 'post-checkout.sh'), 0o755);
      await step('placed post-checkout.sh in the workspace');
    }

    const env = machineEnv(paths.home, tmux);
    // Only a machine made before (a resumed create) can have its session already.
    const has = fresh
      ? null
      : await run('tmux', ['has-session', '-t', SESSION], { env, timeoutMs: TMUX_TIMEOUT_MS });
    if (has?.exitCode !== 0) {
      const started = await run(
        'tmux',
        ['new-session', '-d', '-s', SESSION, '-x', '200', '-y', '50', '-c', paths.workspace, 'bash', '-i'],
        { env, timeoutMs: TMUX_TIMEOUT_MS },
      );
      if (started.exitCode !== 0)
        throw new Error(`tmux could not start the session: ${started.stderr.trim()}`);
      await step(`tmux session "${SESSION}" started in ${paths.workspace}`);
    }
    await writeFile(paths.ready, new Date().toISOString());
    return { id: info.id, thopterId: info.thopterId, createdAt: info.createdAt };
  }

  async get(id: string): Promise<MachineInfo | null> {
    const { meta } = this.layout(id);
    try {
      return JSON.parse(await readFile(meta, 'utf8')) as MachineFile;
    } catch {
      return existsSync(this.dir(id)) ? { id, thopterId: '', createdAt: '' } : null;
    }
  }

  async list(): Promise<MachineInfo[]> {
    let names: string[];
    try {
      names = await readdir(this.machinesDir);
    } catch {
      return [];
    }
    const machines = await Promise.all(names.filter((n) => MACHINE_ID.test(n)).map((n) => this.get(n)));
    return machines.filter((m): m is MachineInfo => m !== null);
  }

  async ready(id: string): Promise<boolean> {
    // A local machine is up as soon as its folder exists; wait-ready checks its init finished.
    return existsSync(this.layout(id).dir);
  }

  async destroy(id: string): Promise<void> {
    const { dir, tmux, paths } = this.layout(id);
    this.usageReaders.delete(id);
    if (!existsSync(dir)) return;
    const env = machineEnv(paths.home, tmux);
    // Ending the tmux server hangs up the shell; whatever the agent started that ignores SIGHUP
    // is ended explicitly, so no process outlives its machine.
    const pane = await run('tmux', ['list-panes', '-a', '-F', '#{pane_pid}'], {
      env,
      timeoutMs: TMUX_TIMEOUT_MS,
    });
    const roots = pane.stdout
      .split('\n')
      .map(Number)
      .filter((n) => n > 1);
    const doomed = roots.length ? [...roots, ...(await descendants(roots))] : [];
    await run('tmux', ['kill-server'], { env, timeoutMs: TMUX_TIMEOUT_MS });
    for (const pid of doomed) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await rm(dir, { recursive: true, force: true, maxRetries: 3 });
    this.log.debug({ machine: id }, 'local machine removed');
  }

  async transport(id: string): Promise<LocalTransport> {
    const { dir, paths, tmux } = this.layout(id);
    await stat(dir); // throws if the machine is gone
    return new LocalTransport(dir, paths, machineEnv(paths.home, tmux));
  }

  async snapshot(id: string, _via?: unknown): Promise<SessionSnapshot> {
    const { tmux, paths } = this.layout(id);
    const env = machineEnv(paths.home, tmux);
    // One tmux call for both: the pane's pid first (one line), then its screen.
    const r = await run(
      'tmux',
      ['display-message', '-p', '-t', SESSION, '#{pane_pid}', ';', 'capture-pane', '-p', '-t', SESSION],
      { env, timeoutMs: TMUX_TIMEOUT_MS },
    );
    if (r.exitCode !== 0) return { screen: '', agentRunning: false, sessionAlive: false };
    const out = r.stdout;
    const newline = out.indexOf('\n');
    const panePid = Number(out.slice(0, newline));
    const screen = out.slice(newline + 1).replace(/\n$/, '');
    // The pane runs an interactive shell; the agent is whatever that shell is running.
    const [agentRunning, turns, usage] = await Promise.all([
      panePid > 1 ? hasChildren(panePid) : false,
      readFile(path.join(paths.home, TURNS_FILE), 'utf8').then(parseTurns, () => undefined),
      this.usage(id),
    ]);
    return { screen, agentRunning, sessionAlive: true, ...(turns ? { turns } : {}), usage };
  }

  /** The usage in the machine's transcripts so far, reading only what was appended since the last call. */
  async usage(id: string) {
    let reader = this.usageReaders.get(id);
    if (!reader) {
      reader = new TranscriptUsageReader(path.join(this.layout(id).paths.home, '.claude', 'projects'));
      this.usageReaders.set(id, reader);
    }
    return reader.read();
  }

  async goldenClaudes(): Promise<string[]> {
    try {
      const entries = await readdir(this.goldenDir, { withFileTypes: true });
      return entries
        .filter((e) => e.isDirectory() && GOLDEN_NAME.test(e.name))
        .map((e) => e.name)
        .sort();
    } catch {
      return [];
    }
  }

  async goldenClaude(name: string): Promise<GoldenClaude | null> {
    if (!GOLDEN_NAME.test(name) || !(await this.goldenClaudes()).includes(name)) return null;
    const home = path.join(this.goldenDir, name);
    const paths: MachinePaths = {
      home,
      workspace: path.join(home, 'workspace'),
      log: path.join(home, '.log'),
      ready: home,
    };
    return {
      name,
      transport: new LocalTransport(home, paths, machineEnv(home, path.join(home, '.tmux'))),
      // A local golden claude is a folder, not a machine: nothing runs "on" it.
      busy: async () => undefined,
    };
  }

  async listGoldenClaudes(): Promise<GoldenClaudeInfo[]> {
    return (await this.goldenClaudes()).map((name) => ({
      name,
      state: 'ready',
      location: path.join(this.goldenDir, name),
    }));
  }

  async createGoldenClaude(name: string): Promise<GoldenClaudeInfo> {
    if (!GOLDEN_NAME.test(name)) throw new Error(`"${name}" is not a golden claude name`);
    const home = path.join(this.goldenDir, name);
    await mkdir(path.join(home, '.claude'), { recursive: true, mode: 0o700 });
    return { name, state: 'ready', location: home };
  }

  async destroyGoldenClaude(name: string): Promise<boolean> {
    if (!GOLDEN_NAME.test(name)) return false;
    const home = path.join(this.goldenDir, name);
    if (!existsSync(home)) return false;
    await rm(home, { recursive: true, force: true, maxRetries: 3 });
    return true;
  }

  async close(): Promise<void> {}
}

async function writeSecret(file: string, content: string) {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  await writeFile(file, content, { mode: 0o600 });
  await chmod(file, 0o600);
}

/** Whether a process has children: from /proc where the kernel offers it, else pgrep. */
async function hasChildren(pid: number): Promise<boolean> {
  try {
    return (await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8')).trim() !== '';
  } catch {
    return (
      (await run('pgrep', ['-P', String(pid)], { env: HOST_ENV, timeoutMs: TMUX_TIMEOUT_MS })).exitCode === 0
    );
  }
}

/** Every descendant of `roots`, from one `ps` call. */
async function descendants(roots: number[]): Promise<number[]> {
  const ps = await run('ps', ['-e', '-o', 'pid=,ppid='], { env: HOST_ENV, timeoutMs: TMUX_TIMEOUT_MS });
  const children = new Map<number, number[]>();
  for (const line of ps.stdout.split('\n')) {
    const [pid, ppid] = line.trim().split(/\s+/).map(Number);
    if (pid && ppid) children.set(ppid, [...(children.get(ppid) ?? []), pid]);
  }
  const out: number[] = [];
  const stack = [...roots];
  while (stack.length) {
    for (const c of children.get(stack.pop()!) ?? []) {
      out.push(c);
      stack.push(c);
    }
  }
  return out;
}
