import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { freePort } from './helpers/env.js';
import { MachineHost, type MachineBoot, type RunResult } from './helpers/machine-host.js';
import { waitFor } from './helpers/wait.js';

// The stand-in for a Fly machine, checked with the system ssh client only, so it does not lean on
// the hub's own transport.

const dir = mkdtempSync(path.join(tmpdir(), 'mht-'));
const hubKey = path.join(dir, 'hub_key');
const wrongKey = path.join(dir, 'wrong_key');
let port: number;
let host: MachineHost;
const ips: Record<string, string> = {};

const b64 = (s: string) => Buffer.from(s).toString('base64');

function boot(id: string, extra: MachineBoot['files'] = []): MachineBoot {
  return {
    id,
    env: { THOPTER_ID: id, REPOSITORY: 'owner/repo', ISSUE_NUMBER: '7' },
    files: [
      { guest_path: '/etc/thopter/hub_authorized_keys', raw_value: b64(publicKey(hubKey)), mode: 0o644 },
      { guest_path: '/etc/thopter/status-token', raw_value: b64(`token-${id}\n`), mode: 0o600 },
      ...extra,
    ],
  };
}

function publicKey(key: string) {
  return execFileSync('ssh-keygen', ['-y', '-f', key], { encoding: 'utf8' });
}

function ssh(ip: string, command: string, opts: { key?: string; user?: string; options?: string[] } = {}) {
  const args = [
    ...['-F', '/dev/null', '-p', String(port), '-i', opts.key ?? hubKey],
    ...['-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10'],
    ...['-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR'],
    ...(opts.options ?? []).flatMap((o) => ['-o', o]),
    `${opts.user ?? 'thopter'}@${ip}`,
    command,
  ];
  return new Promise<RunResult>((resolve) => {
    execFile('ssh', args, (err, stdout, stderr) => {
      const code = err ? (err as { code?: unknown }).code : 0;
      resolve({ code: typeof code === 'number' ? code : -1, stdout, stderr });
    });
  });
}

const ready = (id: string) =>
  waitFor(
    `machine ${id} to be ready`,
    async () => (await ssh(ips[id]!, 'test -f /thopter/ready && tmux has-session -t thopter')).code === 0,
    { timeoutMs: 30_000 },
  );

/** Host pids of every process in the machine's PID namespace. */
async function processesOf(id: string): Promise<{ ns: string; pids: number[] }> {
  const ns = (await host.run(id, 'readlink /proc/self/ns/pid')).stdout.trim();
  assert.match(ns, /^pid:\[\d+\]$/);
  return { ns, pids: pidsIn(ns) };
}

function pidsIn(ns: string): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readlinkSync(`/proc/${p}/ns/pid`) === ns;
      } catch {
        return false; // gone meanwhile, or a kernel thread
      }
    })
    .map(Number);
}

const hostPs = () => execFileSync('ps', ['-eo', 'pid,args'], { encoding: 'utf8' });

before(async () => {
  for (const key of [hubKey, wrongKey])
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
  port = await freePort();
  host = new MachineHost({ port, baseDir: path.join(dir, 'machines') });
  const [a, b] = await Promise.all([
    host.start(
      boot('a', [
        { guest_path: '/tmp/.env.thopters', raw_value: b64('GREETING=hello-from-a\n'), mode: 0o600 },
        { guest_path: '/tmp/post-checkout.sh', raw_value: b64('#!/bin/sh\necho checked out\n'), mode: 0o755 },
      ]),
    ),
    host.start(boot('b')),
  ]);
  ips.a = a.privateIp;
  ips.b = b.privateIp;
});

after(async () => {
  await host?.stopAll();
  rmSync(dir, { recursive: true, force: true });
});

describe('machine host: a thopter machine on loopback', () => {
  it('gives each machine its own loopback address on the shared port', () => {
    assert.match(ips.a!, /^127\.0\.0\.\d+$/);
    assert.match(ips.b!, /^127\.0\.0\.\d+$/);
    assert.notEqual(ips.a, ips.b);
  });

  it('lets the hub in as thopter with its key, and counts the login', async () => {
    await ready('a');
    const before = host.logins('a');
    const r = await ssh(ips.a!, 'id -un; echo "$HOME"; pwd');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'thopter\n/data/thopter\n/data/thopter\n');
    assert.equal(host.logins('a'), before + 1);
  });

  it('refuses a key it was not given', async () => {
    const before = host.logins('a');
    const r = await ssh(ips.a!, 'true', { key: wrongKey });
    assert.equal(r.code, 255);
    assert.match(r.stderr, /Permission denied \(publickey\)/);
    assert.equal(host.logins('a'), before);
  });

  it('offers no password or keyboard-interactive login', async () => {
    const r = await ssh(ips.a!, 'true', {
      options: ['PubkeyAuthentication=no', 'PreferredAuthentications=password,keyboard-interactive'],
    });
    assert.equal(r.code, 255);
    // The server lists the methods it accepts: publickey alone.
    assert.match(r.stderr, /Permission denied \(publickey\)\./);
  });

  it('lets no one but thopter in, not even root with the hub key', async () => {
    const r = await ssh(ips.a!, 'true', { user: 'root' });
    assert.equal(r.code, 255);
    assert.match(r.stderr, /Permission denied/);
  });

  it('installs the delivered files with the right owner and mode', async () => {
    await ready('a');
    const stat = await host.run(
      'a',
      'stat -c "%U %a %n" /etc/thopter/hub_authorized_keys /data/thopter/.thopter/status-token ' +
        '/data/thopter/workspace/.env.thopters /data/thopter/workspace/post-checkout.sh /thopter/log',
    );
    assert.equal(stat.code, 0, stat.stderr);
    assert.deepEqual(stat.stdout.trim().split('\n'), [
      'root 644 /etc/thopter/hub_authorized_keys',
      'thopter 600 /data/thopter/.thopter/status-token',
      'thopter 600 /data/thopter/workspace/.env.thopters',
      'thopter 755 /data/thopter/workspace/post-checkout.sh',
      'thopter 644 /thopter/log',
    ]);
    const gone = await host.run('a', 'ls -A /etc/thopter /tmp/.env.thopters /tmp/post-checkout.sh');
    assert.equal(gone.stdout, '/etc/thopter:\nhub_authorized_keys\n', 'the originals are removed');
    const token = await ssh(ips.a!, 'cat ~/.thopter/status-token');
    assert.equal(token.stdout, 'token-a\n');
  });

  it('gives the thopter shell the env file and the yolo-claude alias', async () => {
    await ready('a');
    const r = await ssh(ips.a!, 'bash -ic \'echo "$GREETING"; alias yolo-claude\' 2>/dev/null');
    assert.equal(r.stdout, "hello-from-a\nalias yolo-claude='claude --dangerously-skip-permissions'\n");
  });

  it('logs each init step with a timestamp, knowing its env, and writes /thopter/ready last', async () => {
    await ready('a');
    const log = (await host.run('a', 'cat /thopter/log')).stdout.trim().split('\n');
    for (const line of log) assert.match(line, /^\d{4}-\d\d-\d\dT[\d:.]+Z init: /);
    assert.match(log[0]!, /init: boot a for owner\/repo#7$/);
    assert.match(log.at(-1)!, /init: ready$/);
  });

  it('runs the tmux session as thopter in the workspace', async () => {
    await ready('a');
    const r = await ssh(ips.a!, "tmux display-message -p -t thopter '#{session_name} #{pane_current_path}'");
    assert.equal(r.stdout, 'thopter /data/thopter/workspace\n');
    // The server keeps the client's arguments; its command name is "tmux: server".
    const ps = await host.run('a', 'ps -eo user=,comm=,args=');
    assert.match(ps.stdout, /^thopter +tmux: server +tmux new-session -d -s thopter /m);
  });

  it('serves SFTP to thopter, as the hub uses for files', async () => {
    await ready('a');
    const local = path.join(dir, 'upload.txt');
    writeFileSync(local, 'sent over sftp\n');
    const batch = `put ${local} /data/thopter/workspace/upload.txt\n`;
    const r = await new Promise<RunResult>((resolve) => {
      const child = execFile(
        'sftp',
        [
          ...['-F', '/dev/null', '-P', String(port), '-i', hubKey, '-b', '-'],
          ...[
            '-o',
            'IdentitiesOnly=yes',
            '-o',
            'StrictHostKeyChecking=no',
            '-o',
            'UserKnownHostsFile=/dev/null',
          ],
          `thopter@${ips.a}`,
        ],
        (err, stdout, stderr) => resolve({ code: err ? -1 : 0, stdout, stderr }),
      );
      child.stdin!.end(batch);
    });
    assert.equal(r.code, 0, r.stderr);
    const stat = await host.run('a', 'stat -c "%U %s" /data/thopter/workspace/upload.txt');
    assert.equal(stat.stdout, 'thopter 15\n');
  });

  it('keeps two machines on the same port apart', async () => {
    await Promise.all([ready('a'), ready('b')]);
    assert.equal((await ssh(ips.a!, 'echo only-on-a > ~/workspace/note')).code, 0);
    assert.equal((await ssh(ips.a!, 'cat ~/workspace/note')).stdout, 'only-on-a\n');
    const onB = await ssh(ips.b!, 'ls -A ~/workspace; cat ~/.thopter/status-token');
    assert.equal(onB.stdout, 'token-b\n', 'b sees neither a workspace file of a nor its token');
    // Each machine sees only its own processes.
    const [psA, psB] = await Promise.all([host.run('a', 'ps -eo args'), host.run('b', 'ps -eo args')]);
    assert.match(psA.stdout, /sshd_config/);
    assert.doesNotMatch(psA.stdout, /machines\/b\//);
    assert.doesNotMatch(psB.stdout, /machines\/a\//);
  });

  it('keeps a machine booting while its readiness is held', async () => {
    host.holdReady('held');
    const { privateIp } = await host.start(boot('held'));
    ips.held = privateIp;
    await waitFor('init to reach the hold', async () =>
      (await host.run('held', 'cat /thopter/log')).stdout.includes('tmux session thopter started'),
    );
    const r = await ssh(privateIp, 'test -e /thopter/ready; echo $?');
    assert.equal(r.stdout, '1\n', 'reachable over ssh but not ready');
    host.release('held');
    await ready('held');
    await host.stop('held');
  });

  it('leaves no process behind when stopped, and refuses ssh', async () => {
    await ready('b');
    const sshdConfig = path.join(dir, 'machines', 'b', 'ctl', 'sshd_config');
    const { ns, pids } = await processesOf('b');
    const args = pids.map((pid) =>
      execFileSync('ps', ['-o', 'args=', '-p', String(pid)], { encoding: 'utf8' }),
    );
    assert.ok(
      args.some((a) => a.includes(sshdConfig)),
      `sshd of b is among its processes: ${args.join('')}`,
    );
    assert.ok(
      args.some((a) => a.startsWith('tmux')),
      `the tmux server of b is among its processes: ${args.join('')}`,
    );
    assert.ok(hostPs().includes(sshdConfig));

    await host.stop('b');

    assert.deepEqual(pidsIn(ns), [], 'no process is left in its namespace');
    const left = hostPs()
      .split('\n')
      .filter((line) => pids.includes(Number(line.trim().split(' ')[0])) || line.includes(sshdConfig));
    assert.deepEqual(left, []);
    const r = await ssh(ips.b!, 'true');
    assert.equal(r.code, 255);
    assert.match(r.stderr, /Connection refused/);
    await host.stop('b'); // idempotent
    assert.ok(host.logins('b') >= 1, 'its login count survives the stop');
    // a is untouched.
    assert.equal((await ssh(ips.a!, 'tmux has-session -t thopter && echo up')).stdout, 'up\n');
  });
});
