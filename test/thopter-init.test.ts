import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  writeFileSync,
} from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { freePort, ROOT } from './helpers/env.js';
import {
  BASE_ENV,
  ensureThopterUser,
  initPid,
  runInNamespace,
  type RunResult,
} from './helpers/machine-host.js';
import { waitFor } from './helpers/wait.js';

// The image's init (thopter/init.sh), run as root against the fixed paths it writes (/data,
// /thopter, /etc/thopter, /tmp, /run), each bound over by a directory of the test's own in a
// private mount namespace, so the host is untouched and init runs exactly as in the image. The
// firewall and pm2 are fakes (the firewall is tested on its own; pm2 is not installed here): the fake
// pm2 loads the real ecosystem.config.cjs with init's environment and records the apps it defines.

const INIT = path.join(ROOT, 'thopter/init.sh');
const base = mkdtempSync(path.join(tmpdir(), 'tit-'));

/**
 * PID 1 of a test machine: Fly's part (private directories), then init as its child. It records
 * init's exit status and stays, so a test can look inside after init has failed.
 */
const HARNESS = [
  'set -euo pipefail',
  'fs=$1 ctl=$2 init=$3 data_mode=$4',
  'repo=$(cd "$(dirname "$init")/.." && pwd)',
  'mkdir -p /data /thopter /etc/thopter',
  'mount --bind "$fs/data" /data',
  'if [[ $data_mode == ro ]]; then mount -o remount,bind,ro /data; fi',
  'mount --bind "$fs/thopter" /thopter',
  'mount --bind "$fs/etc-thopter" /etc/thopter',
  'mount -t tmpfs -o mode=0755 tmpfs /run',
  'if [[ -f $ctl/hosts ]]; then mount --bind "$ctl/hosts" /etc/hosts; fi',
  '# The private /tmp hides CTL_DIR (the fakes, the flags) and a checkout under /tmp (a fresh',
  '# clone made with mktemp): bind them back at their own paths inside.',
  'for dir in "$ctl" "$repo"; do',
  '  if [[ $dir == /tmp/* ]]; then',
  '    mkdir -p "$fs/tmp${dir#/tmp}"',
  '    mount --bind "$dir" "$fs/tmp${dir#/tmp}"',
  '  fi',
  'done',
  'chmod 1777 "$fs/tmp"',
  'mount --rbind "$fs/tmp" /tmp',
  'bash "$init" &',
  'echo "$!" >"$ctl/init.pid"',
  'status=0',
  'wait "$!" || status=$?',
  'echo "$status" >"$ctl/init.exit"',
  "# Stays, reaping what init leaves behind (as Fly's own init does), until the test kills it.",
  'sleep infinity &',
  'wait "$!"',
].join('\n');

const sh = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

interface Boot {
  env?: Record<string, string>;
  /** Written before boot, as Fly writes `config.files`: path under the machine's dirs → [content, mode]. */
  files?: Record<string, [string, number]>;
  readOnlyData?: boolean;
  /** Replaces /etc/hosts inside the machine. */
  hosts?: string;
  /** Put first in init's PATH (to stand in for a command init runs). */
  pathFirst?: string;
}

/** A machine's directories (kept across its boots, as a volume is) and the one boot running now. */
class Machine {
  readonly fs: string;
  readonly ctl: string;
  readonly bin: string;
  private child?: ChildProcess;
  private pid?: number;
  private exited = Promise.resolve();
  private readyLines = 0;

  constructor(readonly name: string) {
    const dir = path.join(base, name);
    this.fs = path.join(dir, 'fs');
    this.ctl = path.join(dir, 'ctl');
    this.bin = path.join(this.ctl, 'bin');
    for (const sub of ['data', 'thopter', 'etc-thopter', 'tmp']) {
      mkdirSync(path.join(this.fs, sub), { recursive: true, mode: 0o755 });
    }
    mkdirSync(this.bin, { recursive: true });
    this.fake(
      'firewall',
      `#!/bin/sh\necho "$* inbound=$FIREWALL_INBOUND_TCP_PORTS" >>${this.ctl}/firewall-calls\n`,
    );
    this.fake('firewall-fails', '#!/bin/sh\necho "nft: could not load the ruleset" >&2\nexit 1\n');
    this.fake(
      'pm2',
      [
        '#!/usr/bin/env node',
        'const [command, config] = process.argv.slice(2);',
        "if (command === 'start') {",
        '  const { apps } = require(config);',
        '  const seen = apps.map((a) => ({ name: a.name, user: a.uid ?? "root", args: a.args ?? [] }));',
        `  require('node:fs').writeFileSync(${JSON.stringify(path.join(this.ctl, 'pm2-apps.json'))}, JSON.stringify(seen));`,
        '}',
        '',
      ].join('\n'),
    );
  }

  fake(name: string, script: string) {
    const file = path.join(this.bin, name);
    writeFileSync(file, script, { mode: 0o755 });
    return file;
  }

  async boot(opts: Boot = {}): Promise<void> {
    if (this.child) throw new Error(`${this.name} is running`);
    await ensureThopterUser();
    for (const file of ['init.pid', 'init.exit', 'hosts']) rmSafe(path.join(this.ctl, file));
    if (opts.hosts !== undefined) writeFileSync(path.join(this.ctl, 'hosts'), opts.hosts);
    for (const [file, [content, mode]] of Object.entries(opts.files ?? {})) {
      const target = path.join(this.fs, file);
      mkdirSync(path.dirname(target), { recursive: true });
      writeFileSync(target, content, { mode });
    }
    this.readyLines = this.log().filter((l) => l.endsWith(' init: ready')).length;
    const env = {
      ...BASE_ENV,
      PATH: opts.pathFirst ? `${opts.pathFirst}:${BASE_ENV.PATH}` : BASE_ENV.PATH,
      THOPTER_ID: 't-1',
      THOPTER_MACHINE: 'm-1',
      THOPTER_ROLE: 'thopter',
      REPOSITORY: 'owner/repo',
      ISSUE_NUMBER: '7',
      HUB_STATUS_URL: 'http://hub.invalid/api/thopters/t-1/status',
      THOPTER_SSHD: 'none',
      THOPTER_PM2: path.join(this.bin, 'pm2'),
      THOPTER_FIREWALL: path.join(this.bin, 'firewall'),
      ...opts.env,
    };
    const out = openSync(path.join(this.ctl, 'boot.log'), 'a');
    try {
      this.child = spawn(
        'unshare',
        [
          ...['--mount', '--propagation', 'private', '--pid', '--fork', '--mount-proc', '--kill-child'],
          ...[
            '--',
            'bash',
            '-c',
            HARNESS,
            'harness',
            this.fs,
            this.ctl,
            INIT,
            opts.readOnlyData ? 'ro' : 'rw',
          ],
        ],
        { env, stdio: ['ignore', out, out] },
      );
    } finally {
      closeSync(out);
    }
    const child = this.child;
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    this.pid = await waitFor(`${this.name}'s PID 1`, () => initPid(child), {
      timeoutMs: 10_000,
      intervalMs: 10,
    });
  }

  /** A shell command inside the machine, as root. */
  run(script: string): Promise<RunResult> {
    if (this.pid === undefined) return Promise.reject(new Error(`${this.name} is not running`));
    return runInNamespace(this.pid, script);
  }

  /** A shell command inside the machine, as thopter (a plain `runuser`, not init's own way). */
  asThopter(script: string): Promise<RunResult> {
    return this.run(`cd /tmp && runuser -u thopter -- bash -c ${sh(script)}`);
  }

  async output(script: string): Promise<string> {
    const r = await this.run(script);
    assert.equal(r.code, 0, `${script}: ${r.stderr}`);
    return r.stdout;
  }

  log(): string[] {
    const file = path.join(this.fs, 'thopter/log');
    return existsSync(file) ? readFileSync(file, 'utf8').trimEnd().split('\n') : [];
  }

  /** Lines of this boot's init, without their timestamps. */
  steps(): string[] {
    return this.log().map((l) => l.replace(/^\S+ init: /, ''));
  }

  initExit(): number | undefined {
    const file = path.join(this.ctl, 'init.exit');
    return existsSync(file) ? Number(readFileSync(file, 'utf8')) : undefined;
  }

  /** Until this boot wrote /thopter/ready; fails at once if init exited instead. */
  async ready(): Promise<void> {
    await waitFor(`${this.name} to be ready`, () => {
      const exit = this.initExit();
      if (exit !== undefined) {
        throw new Error(`init exited ${exit}:\n${this.log().join('\n')}\n${this.bootLog()}`);
      }
      const lines = this.log().filter((l) => l.endsWith(' init: ready')).length;
      return lines > this.readyLines && existsSync(path.join(this.fs, 'thopter/ready'));
    });
  }

  /** Until init exited; its status. */
  exit(): Promise<number> {
    return waitFor(`${this.name}'s init to exit`, () => this.initExit());
  }

  bootLog(): string {
    return readFileSync(path.join(this.ctl, 'boot.log'), 'utf8');
  }

  pm2Apps(): { name: string; user: string; args: string[] }[] | undefined {
    const file = path.join(this.ctl, 'pm2-apps.json');
    return existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : undefined;
  }

  /** Kills the machine: its PID 1, and with it every process of its namespace. Its directories stay. */
  async stop(): Promise<void> {
    if (!this.child) return;
    try {
      if (this.pid !== undefined) process.kill(this.pid, 'SIGKILL');
      else this.child.kill('SIGKILL');
    } catch {
      // already gone
    }
    await this.exited;
    this.child = undefined;
    this.pid = undefined;
  }
}

function rmSafe(file: string) {
  try {
    execFileSync('rm', ['-f', file]);
  } catch {
    // nothing to remove
  }
}

function oldDataDirs(m: Machine): string[] {
  return readdirSync(path.join(m.fs, 'data')).filter((e) => e.startsWith('.thopter-old-'));
}

const machines: Machine[] = [];
function machine(name: string) {
  const m = new Machine(name);
  machines.push(m);
  return m;
}

before(() => ensureThopterUser());

after(async () => {
  await Promise.all(machines.map((m) => m.stop()));
  // The wipe test leaves immutable files behind if it failed; rm alone would stop at them.
  try {
    execFileSync('chattr', ['-R', '-f', '-ia', base], { stdio: 'ignore' });
  } catch {
    // some files had no attributes to clear
  }
  execFileSync('rm', ['-rf', '--one-file-system', base]);
});

describe('thopter init', () => {
  it('prepares a new thopter: home, delivered files, shell, git identity, firewall, helpers, tmux, ready last', async () => {
    const m = machine('fresh');
    await m.boot({
      files: {
        'etc-thopter/status-token': ['token-t-1\n', 0o600],
        'tmp/.env.thopters': ['GREETING="hello from the env file"\n', 0o600],
        'tmp/post-checkout.sh': ['#!/bin/sh\necho checked out\n', 0o755],
      },
      env: { GIT_USER_NAME: 'Widget Bot', GIT_USER_EMAIL: 'bot@example.com' },
    });
    await m.ready();

    const log = m.log();
    for (const line of log) assert.match(line, /^\d{4}-\d\d-\d\dT[\d:.]+Z init: /);
    const steps = m.steps();
    assert.equal(steps[0], 'boot t-1 for owner/repo#7');
    assert.equal(steps.at(-1), 'ready');
    const order = ['firewall started', 'pm2 started the helpers', 'tmux session thopter started', 'ready'];
    assert.deepEqual(
      order.map((s) => steps.indexOf(s)),
      order.map((s) => steps.indexOf(s)).toSorted((a, b) => a - b),
      `in order: ${order.join(', ')}\n${steps.join('\n')}`,
    );

    const stat = await m.output(
      'stat -c "%U %a %n" /data/thopter /data/thopter/workspace /data/thopter/.thopter ' +
        '/data/thopter/.thopter/status-token /data/thopter/workspace/.env.thopters ' +
        '/data/thopter/workspace/post-checkout.sh /data/thopter/.bashrc /data/thopter/.bash_aliases ' +
        '/thopter/log /thopter/ready /data/.thopter-owner',
    );
    assert.deepEqual(stat.trim().split('\n'), [
      'thopter 750 /data/thopter',
      'thopter 755 /data/thopter/workspace',
      'thopter 700 /data/thopter/.thopter',
      'thopter 600 /data/thopter/.thopter/status-token',
      'thopter 600 /data/thopter/workspace/.env.thopters',
      'thopter 755 /data/thopter/workspace/post-checkout.sh',
      'thopter 644 /data/thopter/.bashrc',
      'thopter 644 /data/thopter/.bash_aliases',
      'thopter 644 /thopter/log',
      'root 644 /thopter/ready',
      'root 644 /data/.thopter-owner',
    ]);
    assert.equal(await m.output('cat /data/thopter/.thopter/status-token'), 'token-t-1\n');
    assert.equal(await m.output('cat /data/.thopter-owner'), 'm-1\n');
    assert.equal(
      await m.output('ls -A /etc/thopter /tmp | grep -E "status-token|env.thopters|post-checkout" || true'),
      '',
      "Fly's copies are gone",
    );

    // What the agent's user may and may not touch.
    for (const file of [
      '/etc/thopter/planted',
      '/thopter/ready',
      '/thopter/planted',
      '/data/.thopter-owner',
      '/data/planted',
    ]) {
      const r = await m.asThopter(`echo x >>${file}`);
      assert.notEqual(r.code, 0, `thopter must not write ${file}`);
    }
    assert.equal(
      (await m.asThopter('echo "hub phase line" >>/thopter/log')).code,
      0,
      'the hub appends as thopter',
    );

    // A login shell gets the env file exported, uv's PATH, the alias and the git identity.
    assert.equal(await m.output("su - thopter -c 'printenv GREETING'"), 'hello from the env file\n');
    assert.match(await m.output("su - thopter -c 'echo $PATH'"), /^\/data\/thopter\/\.local\/bin:/);
    assert.equal(
      await m.output(`su - thopter -c "bash -ic 'alias yolo-claude' 2>/dev/null"`),
      "alias yolo-claude='claude --dangerously-skip-permissions'\n",
    );
    assert.equal(
      await m.output("su - thopter -c 'git config --global user.name; git config --global user.email'"),
      'Widget Bot\nbot@example.com\n',
    );

    // The tmux session: as thopter, in the workspace, its shell holding no capability and unable to gain one.
    const pane = (
      await m.asThopter("tmux display-message -p -t thopter '#{pane_pid} #{pane_current_path}'")
    ).stdout.trim();
    const [panePid, paneDir] = pane.split(' ');
    assert.equal(paneDir, '/data/thopter/workspace');
    const status = await m.output(`grep -E '^(Uid|CapEff|CapBnd|NoNewPrivs):' /proc/${panePid}/status`);
    const uid = execFileSync('id', ['-u', 'thopter'], { encoding: 'utf8' }).trim();
    assert.match(status, new RegExp(`^Uid:\\s+${uid}\\s`, 'm'));
    assert.match(status, /^CapEff:\s+0+$/m);
    assert.match(status, /^CapBnd:\s+0+$/m);
    assert.match(status, /^NoNewPrivs:\s+1$/m);
    // The pane's own login shell exports the env file too.
    await m.asThopter("tmux send-keys -t thopter 'printenv GREETING >~/greeting' Enter");
    await waitFor(
      'the pane to run the command',
      async () => (await m.run('cat /data/thopter/greeting')).stdout === 'hello from the env file\n',
    );

    // The firewall lets in sshd's port, and nothing else.
    assert.equal(readFileSync(path.join(m.ctl, 'firewall-calls'), 'utf8'), 'start inbound=2222\n');
    assert.deepEqual(m.pm2Apps(), [
      { name: 'observer', user: 'thopter', args: [path.join(ROOT, 'thopter/observer.mjs')] },
      { name: 'session-log', user: 'thopter', args: [] },
      { name: 'firewall-refresh', user: 'root', args: ['refresh-loop'] },
    ]);

    // init stays, as the machine's main process.
    assert.equal(m.initExit(), undefined);
    assert.equal((await m.run('kill -0 "$(cat ' + path.join(m.ctl, 'init.pid') + ')"')).code, 0);
    await m.stop();
  });

  it('keeps the volume when the same thopter boots again, and wipes it when another one does', async () => {
    const m = machine('reused');
    await m.boot();
    await m.ready();
    assert.equal((await m.asThopter('echo mine >/data/thopter/workspace/note')).code, 0);
    await m.stop();

    // A reboot of the same machine: its data stays; the ready file of the last boot does not.
    const hold = path.join(m.ctl, 'hold-ready');
    writeFileSync(hold, '');
    await m.boot({ env: { THOPTER_HOLD_READY: hold } });
    await waitFor('the second boot to reach the hold', () =>
      m.log().at(-1)?.endsWith('init: tmux session thopter started'),
    );
    assert.equal(
      existsSync(path.join(m.fs, 'thopter/ready')),
      false,
      'no ready file before this boot is done',
    );
    rmSafe(hold);
    await m.ready();
    assert.ok(m.steps().includes('volume belongs to this thopter (m-1): data kept'));
    assert.equal(await m.output('cat /data/thopter/workspace/note'), 'mine\n');
    await m.stop();

    // Another thopter gets the volume: nothing of m-1 reaches it.
    await m.boot({ env: { THOPTER_MACHINE: 'm-2', THOPTER_ID: 't-2' } });
    await m.ready();
    assert.match(m.steps().join('\n'), /volume last belonged to m-1: its \d+ entries moved aside/);
    assert.equal((await m.run('test -e /data/thopter/workspace/note')).code, 1);
    assert.equal(await m.output('cat /data/.thopter-owner'), 'm-2\n');
    // Logged once the deletion is over.
    await waitFor('the old data to be deleted', () =>
      m.steps().some((s) => s.startsWith('old data deleted')),
    );
    assert.deepEqual(oldDataDirs(m), []);
    await m.stop();
  });

  it("wipes a volume that has data but no owner file, as another thopter's", async () => {
    const m = machine('unowned');
    mkdirSync(path.join(m.fs, 'data/thopter/workspace'), { recursive: true });
    writeFileSync(path.join(m.fs, 'data/thopter/workspace/secret'), 'left by someone\n');
    writeFileSync(path.join(m.fs, 'data/stray'), 'stray\n');
    mkdirSync(path.join(m.fs, 'data/lost+found'), { mode: 0o700 });
    await m.boot();
    await m.ready();
    assert.ok(
      m
        .steps()
        .includes(
          'volume last belonged to no owner recorded: its 2 entries moved aside, deleted in the background',
        ),
    );
    assert.equal(await m.output('ls -A /data/thopter/workspace'), '');
    await waitFor('the old data to be deleted', () => oldDataDirs(m).length === 0);
    assert.deepEqual(readdirSync(path.join(m.fs, 'data')).sort(), [
      '.thopter-owner',
      'lost+found',
      'thopter',
    ]);
    await m.stop();
  });

  it('wipes a deep, read-only, immutable uv cache in the background: init is ready before the deletion ends', async () => {
    const m = machine('uv-cache');
    const canary = path.join(m.ctl, 'canary');
    writeFileSync(canary, 'outside the volume\n');
    // What a uv cache leaves: thousands of read-only files in read-only directories, nesting deeper
    // than PATH_MAX, and here also what only root can do (immutable, append-only) and a link out.
    const built = execFileSync(
      'bash',
      [
        '-c',
        [
          'set -euo pipefail',
          'cd "$1"',
          'mkdir -p thopter/.cache/uv/archive-v0 thopter/workspace',
          'for d in $(seq 1 40); do',
          '  mkdir "thopter/.cache/uv/archive-v0/$d"',
          '  for f in $(seq 1 100); do echo "wheel $d $f" >"thopter/.cache/uv/archive-v0/$d/$f.py"; done',
          'done',
          'chmod -R a-w thopter/.cache/uv/archive-v0',
          'ln -s "$2" thopter/.cache/uv/link-out',
          'mkdir thopter/.cache/uv/append && echo x >thopter/.cache/uv/append/f && echo x >thopter/.cache/uv/locked',
          '(',
          '  cd thopter/.cache/uv',
          "  segment=$(printf 'nested-dir/%.0s' $(seq 1 300))",
          '  for _ in 1 2 3; do mkdir -p "$segment" && cd "$segment"; done',
          '  echo bottom >file && chmod 0444 file && echo "depth ${#PWD}"',
          ')',
          'if chattr +a thopter/.cache/uv/append && chattr +i thopter/.cache/uv/locked && chattr +i thopter; then',
          '  echo attributes set',
          'fi',
        ].join('\n'),
        'build',
        path.join(m.fs, 'data'),
        canary,
      ],
      { encoding: 'utf8' },
    );
    assert.match(built, /depth (\d+)/);
    assert.ok(Number(/depth (\d+)/.exec(built)![1]) > 4096, 'deeper than PATH_MAX');
    // Immutable and append-only need a file system that has them (ext4 and most do; tmpfs not).
    const attributes = built.includes('attributes set');

    // The deletion runs through ionice; this one waits for the test before it lets it start.
    const gate = path.join(m.ctl, 'gate');
    mkdirSync(gate);
    const held = path.join(m.ctl, 'hold-delete');
    writeFileSync(held, '');
    writeFileSync(
      path.join(gate, 'ionice'),
      `#!/bin/sh\necho "$*" >${m.ctl}/ionice-args\nwhile [ -e ${held} ]; do sleep 0.05; done\nexec /usr/bin/ionice "$@"\n`,
      { mode: 0o755 },
    );

    await m.boot({ pathFirst: gate, env: { THOPTER_MACHINE: 'm-new' } });
    await m.ready();
    // Ready, with its session, while the old data has not even started to go.
    assert.equal((await m.asThopter('tmux has-session -t thopter')).code, 0);
    assert.equal(
      await m.output('ls -A /data/thopter'),
      '.bash_aliases\n.bash_profile\n.bashrc\n.local\n.thopter\nworkspace\n',
    );
    const [old] = oldDataDirs(m);
    assert.ok(old, 'the old data waits in one directory');
    assert.equal(await m.output(`stat -c "%U %a" /data/${old}`), 'root 700\n');
    await waitFor('the deletion to be started', () => existsSync(path.join(m.ctl, 'ionice-args')));
    assert.equal(
      readFileSync(path.join(m.ctl, 'ionice-args'), 'utf8'),
      `-c 3 -t nice -n 19 ${path.join(ROOT, 'thopter/delete-old-data.sh')}\n`,
      'at the lowest I/O and CPU priority',
    );

    rmSafe(held);
    await waitFor('the old data to be deleted', () => m.steps().includes(`old data deleted (${old})`), {
      timeoutMs: 120_000,
    });
    assert.deepEqual(oldDataDirs(m), []);
    assert.equal(readFileSync(canary, 'utf8'), 'outside the volume\n', 'the link out was not followed');
    if (!attributes) console.log('# this file system has no immutable attribute: that part was not tried');
    await m.stop();
  });

  it('gives a golden claude no observer and keeps its volume', async () => {
    const m = machine('golden');
    mkdirSync(path.join(m.fs, 'data/thopter/.claude'), { recursive: true });
    writeFileSync(path.join(m.fs, 'data/thopter/.claude/settings.json'), '{"theme":"dark"}\n');
    await m.boot({
      env: { THOPTER_ROLE: 'golden', THOPTER_ID: '', THOPTER_MACHINE: '', REPOSITORY: '', ISSUE_NUMBER: '' },
    });
    await m.ready();
    assert.equal(m.steps()[0], 'boot golden claude');
    assert.ok(m.steps().includes('golden claude: /data kept as it is'));
    assert.equal(await m.output('cat /data/thopter/.claude/settings.json'), '{"theme":"dark"}\n');
    assert.deepEqual(
      m.pm2Apps()?.map((a) => a.name),
      ['session-log', 'firewall-refresh'],
    );
    await m.stop();
  });

  it('says loudly that DANGEROUSLY_SKIP_FIREWALL=I_UNDERSTAND leaves the thopter without a firewall', async () => {
    const m = machine('no-firewall');
    // The real firewall.sh, which honours the setting itself: it loads nothing and succeeds.
    await m.boot({
      env: {
        DANGEROUSLY_SKIP_FIREWALL: 'I_UNDERSTAND',
        THOPTER_FIREWALL: path.join(ROOT, 'thopter/firewall.sh'),
      },
    });
    await m.ready();
    const log = m.log().join('\n');
    assert.match(log, / init: DANGER: DANGEROUSLY_SKIP_FIREWALL=I_UNDERSTAND: NO EGRESS FIREWALL/);
    assert.match(log, / firewall: WARNING: /);
    assert.deepEqual(
      m.pm2Apps()?.map((a) => a.name),
      ['observer', 'session-log'],
      'no firewall to refresh',
    );
    await m.stop();
  });

  it('starts no agent when DANGEROUSLY_SKIP_FIREWALL has any other value, which firewall.sh refuses', async () => {
    const m = machine('bad-skip');
    await m.boot({
      env: { DANGEROUSLY_SKIP_FIREWALL: 'yes', THOPTER_FIREWALL: path.join(ROOT, 'thopter/firewall.sh') },
    });
    assert.equal(await m.exit(), 1);
    assert.match(
      m.steps().at(-1)!,
      /^FAILED: the firewall did not load \(exit 2: .*\): the agent is not started$/,
    );
    assert.equal(existsSync(path.join(m.fs, 'thopter/ready')), false);
    await m.stop();
  });

  it('starts no agent, writes no ready file and exits non-zero when the firewall does not load', async () => {
    const m = machine('firewall-fails');
    await m.boot({ env: { THOPTER_FIREWALL: path.join(m.bin, 'firewall-fails') } });
    assert.equal(await m.exit(), 1);
    assert.equal(
      m.steps().at(-1),
      'FAILED: the firewall did not load (exit 1: nft: could not load the ruleset): the agent is not started',
    );
    assert.equal(existsSync(path.join(m.fs, 'thopter/ready')), false);
    assert.notEqual((await m.asThopter('tmux has-session -t thopter')).code, 0, 'no tmux session');
    assert.equal((await m.run('pgrep -u thopter')).stdout, '', 'no process of the agent');
    assert.equal(m.pm2Apps(), undefined, 'no helpers');
    await m.stop();
  });

  it('gives up when /data is not writable after its tries', async () => {
    const m = machine('read-only');
    await m.boot({ readOnlyData: true, env: { THOPTER_DATA_TRIES: '3', THOPTER_DATA_INTERVAL: '0' } });
    assert.equal(await m.exit(), 1);
    assert.deepEqual(m.steps().slice(1), [
      'waiting for /data to be mounted and writable',
      'FAILED: /data is not a writable mount after 3 tries, 0 s apart: is the volume attached?',
    ]);
    assert.equal(existsSync(path.join(m.fs, 'thopter/ready')), false);
    assert.equal((await m.run('pgrep -u thopter')).stdout, '');
    await m.stop();
  });

  it('runs sshd on the fly-local-6pn address only, with the delivered host key, keeps it up, and stops on SIGTERM', async () => {
    const m = machine('sshd');
    const key = path.join(m.ctl, 'hub_key');
    const hostKey = path.join(m.ctl, 'host_key');
    for (const k of [key, hostKey]) execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', k]);
    const port = await freePort();
    const knownHosts = path.join(m.ctl, 'known_hosts');
    writeFileSync(knownHosts, `[::1]:${port} ${readFileSync(`${hostKey}.pub`, 'utf8')}`);
    await m.boot({
      // IPv6, as Fly's 6PN address is.
      hosts: '127.0.0.1\tlocalhost\n::1\tfly-local-6pn\n',
      files: {
        'etc-thopter/hub_authorized_keys': [readFileSync(`${key}.pub`, 'utf8'), 0o644],
        'etc-thopter/ssh_host_ed25519_key': [readFileSync(hostKey, 'utf8'), 0o600],
      },
      env: { THOPTER_SSHD: '/usr/sbin/sshd', THOPTER_SSH_PORT: String(port) },
    });
    await m.ready();
    assert.ok(m.steps().includes(`sshd listening on [::1]:${port}`), m.steps().join('\n'));

    const ssh = (user: string, command: string) =>
      new Promise<RunResult>((resolve) => {
        const args = [
          ...[
            '-F',
            '/dev/null',
            '-p',
            String(port),
            '-i',
            key,
            '-o',
            'IdentitiesOnly=yes',
            '-o',
            'BatchMode=yes',
          ],
          ...[
            '-o',
            'StrictHostKeyChecking=yes',
            '-o',
            `UserKnownHostsFile=${knownHosts}`,
            '-o',
            'LogLevel=ERROR',
          ],
          `${user}@::1`,
          command,
        ];
        execFile('ssh', args, (err, stdout, stderr) => {
          const code = err ? (err as { code?: unknown }).code : 0;
          resolve({ code: typeof code === 'number' ? code : -1, stdout, stderr });
        });
      });
    const login = await ssh('thopter', 'id -un; tmux has-session -t thopter && echo session');
    assert.equal(login.code, 0, login.stderr);
    assert.equal(login.stdout, 'thopter\nsession\n');
    assert.match((await ssh('root', 'true')).stderr, /Permission denied/);
    const elsewhere = await new Promise<string>((resolve) => {
      const socket = connect({ host: '127.0.0.1', port });
      socket.once('connect', () => {
        socket.destroy();
        resolve('connected');
      });
      socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    });
    assert.equal(elsewhere, 'ECONNREFUSED', 'nothing listens on other addresses');

    // sshd is the hub's only way in: init starts it again when it dies.
    await m.run('kill "$(cat /run/sshd.pid)"');
    await waitFor('init to start sshd again', () =>
      m.steps().some((s) => /^sshd exited \(exit \d+\): starting it again$/.test(s)),
    );
    await waitFor('sshd to let the hub in again', async () => (await ssh('thopter', 'true')).code === 0);

    // Fly's stop signal: everything stops, and init exits 0.
    await m.run(`kill -TERM "$(cat ${path.join(m.ctl, 'init.pid')})"`);
    assert.equal(await m.exit(), 0);
    assert.equal(m.steps().at(-1), 'stopping');
    await waitFor('sshd and tmux to be gone', async () => {
      const left = await m.output(
        `ps -eo pid=,user=,comm=,args= | awk '$3 == "sshd" || $3 ~ /^tmux/ || $2 == "thopter"'`,
      );
      if (left !== '') throw new Error(`still running:\n${left}`);
      return true;
    });
    await m.stop();
  });
});
