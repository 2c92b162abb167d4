import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Hub } from '../src/hub.js';
import type { Request } from '../src/thopters/record.js';
import { hashToken } from '../src/thopters/store.js';
import { buildObserver } from '../thopter/observer/build.js';
import { truncateScreen } from '../thopter/observer/observe.js';
import { parseIssueJson } from '../thopter/observer/machine.js';
import { backoffDelay } from '../thopter/observer/report.js';
import { api, TestWorld } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

/*
 * The observer as a thopter runs it: the esbuild bundle, started with plain `node`, watching a real
 * tmux session on a tmux server of the test's own, posting to a real hub (local provider, real
 * Redis). What users see is read back through GET /api/thopters/:id.
 *
 * Each test's thopter is a record made the way the hub makes one (request, status token hash,
 * running), with no lifecycle job. That is how a Fly thopter looks to the hub: the hub does not
 * observe it (`hubObserves` is false there), so every session field comes from the observer.
 * A thopter launched on the local provider would not do: its lifecycle job snapshots the machine's
 * tmux and writes the same session field every THOPTER_STATUS_INTERVAL, racing the observer.
 * Reconciliation, which would tear down a running record without a job, runs when the hub starts
 * (before these records exist) and then every 10 minutes, longer than this file runs.
 */

const world = new TestWorld();
let hub: Hub;
let bundle: string;
const cleanups: Array<() => Promise<unknown> | unknown> = [];

before(async () => {
  await world.start();
  hub = await world.hub();
  bundle = await buildObserver(path.join(world.dir, 'observer.mjs'));
});
after(async () => {
  for (const clean of cleanups.reverse()) await clean();
  await world.close();
});

/** A thopter record with a known status token, and the folder playing its /data/thopter. */
async function thopter() {
  const id = `thopter-${randomBytes(6).toString('hex')}`;
  const request: Request = {
    id,
    source: 'api',
    repository: 'acme/widgets',
    cloneUrl: 'https://github.com/acme/widgets.git',
    repoName: 'widgets',
    issue: { number: 42, title: 'observe me', body: '', comments: [] },
    gc: 'default',
    prompt: 'default',
    priority: 10,
    requestedBy: 'api',
    createdAt: new Date().toISOString(),
  };
  await hub.store.create(request);
  const token = randomBytes(32).toString('base64url');
  await hub.store.addTokenHash(id, hashToken(token));
  await hub.store.setState(id, 'running', 'runningAt');
  const home = path.join(world.dir, id.slice('thopter-'.length));
  mkdirSync(path.join(home, 'workspace'), { recursive: true });
  const tokenFile = path.join(home, '.thopter', 'status-token');
  // Placed whole, as init moves it into place: never seen half-written.
  const writeToken = (value: string) => {
    mkdirSync(path.dirname(tokenFile), { recursive: true });
    writeFileSync(`${tokenFile}.new`, value, { mode: 0o600 });
    renameSync(`${tokenFile}.new`, tokenFile);
  };
  return { id, token, home, tokenFile, writeToken, issueFile: path.join(home, 'workspace', 'issue.json') };
}
type Thopter = Awaited<ReturnType<typeof thopter>>;

/** The session as the API shows it to users. */
async function session(id: string) {
  const r = await api(hub.url, 'GET', `/api/thopters/${id}`);
  assert.equal(r.status, 200);
  return r.body.session as null | {
    state: string;
    agentRunning: boolean;
    lastActivity: string;
    idleSince?: string;
    screen: string;
    updatedAt: string;
    source: string;
  };
}

/** A tmux server of the test's own (TMUX_TMPDIR under the world's folder), with one session. */
class Tmux {
  readonly dir: string;
  constructor(name: string) {
    this.dir = path.join(world.dir, `tmux-${name}`);
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    cleanups.push(() => this.killServer());
  }
  get socket() {
    return path.join(this.dir, `tmux-${process.getuid!()}`, 'default');
  }
  private tmux(args: string[]) {
    const env = { PATH: process.env.PATH!, HOME: world.dir, TMUX_TMPDIR: this.dir, TERM: 'xterm', PS1: '$ ' };
    return execFileSync('tmux', args, { env, stdio: 'pipe', encoding: 'utf8' });
  }
  start(session = 'thopter') {
    this.tmux(['new-session', '-d', '-s', session, '-x', '80', '-y', '24', 'bash --norc --noprofile']);
  }
  type(line: string, session = 'thopter') {
    this.tmux(['send-keys', '-t', `=${session}:`, line, 'Enter']);
  }
  killServer() {
    try {
      this.tmux(['kill-server']);
    } catch {
      // no server
    }
  }
}

/** The observer bundle in a child process, with fast settings. */
function observe(t: Thopter, statusUrl: string, env: Record<string, string>) {
  const child: ChildProcess = spawn(process.execPath, [bundle], {
    env: {
      PATH: process.env.PATH!,
      HOME: t.home,
      THOPTER_ID: t.id,
      HUB_STATUS_URL: statusUrl,
      OBSERVER_INTERVAL_MS: '200',
      OBSERVER_IDLE_AFTER_MS: '1500',
      OBSERVER_TOKEN_FILE: t.tokenFile,
      OBSERVER_ISSUE_FILE: t.issueFile,
      OBSERVER_BACKOFF_MAX_MS: '1000',
      OBSERVER_SLOW_RETRY_MS: '300',
      OBSERVER_STOP_TIMEOUT_MS: '10000',
      // No `claude` of the host's (someone's real agent) can be mistaken for this thopter's.
      OBSERVER_AGENT_PROCESS: `claude-${randomBytes(3).toString('hex')}`,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  // 'close', not 'exit': the process's last lines are read by then.
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  };
  cleanups.push(stop);
  const lines = (re: RegExp) => out.split('\n').filter((l) => re.test(l));
  /** Waits for a line (its output arrives on a pipe of its own, maybe after what the hub shows). */
  const said = (re: RegExp) => waitFor(`the observer to log ${re}`, () => lines(re).length > 0 && lines(re));
  return { child, exited, stop, output: () => out, lines, said };
}

/**
 * Stands between the observer and the hub: forwards, or plays a hub that is down (its port
 * closed, or connections dropped) or failing (503). It counts what it answered.
 */
class HubProxy {
  mode: 'forward' | 'drop' | 'fail' = 'forward';
  readonly answers: number[] = [];
  dropped = 0;
  lastBody: any;
  private server?: Server;
  private port = 0;

  constructor(private readonly target: string) {
    cleanups.push(() => this.close());
  }
  statusUrl(id: string) {
    return `http://127.0.0.1:${this.port}/api/thopters/${id}/status`;
  }
  count(status: number) {
    return this.answers.filter((s) => s === status).length;
  }
  async open() {
    const server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
    return this;
  }
  async close() {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    const closed = new Promise((resolve) => server.close(resolve));
    server.closeAllConnections();
    await closed;
  }
  private async handle(req: IncomingMessage, res: ServerResponse) {
    if (this.mode === 'drop') {
      this.dropped++;
      req.socket.destroy();
      return;
    }
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks).toString('utf8');
    if (this.mode === 'fail') {
      this.answers.push(503);
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end('{"error":{"code":"unavailable","message":"down for maintenance"}}');
      return;
    }
    const r = await fetch(`${this.target}${req.url}`, {
      method: req.method,
      headers: {
        authorization: req.headers.authorization ?? '',
        'content-type': req.headers['content-type'] ?? '',
      },
      body,
    });
    this.answers.push(r.status);
    this.lastBody = JSON.parse(body);
    res.writeHead(r.status, { 'content-type': r.headers.get('content-type') ?? 'text/plain' });
    res.end(await r.text());
  }
}

const statusUrl = (id: string) => `${hub.url}/api/thopters/${id}/status`;

describe('the observer', () => {
  it('shows the session active while the pane changes, idle once it stops, and active again', async () => {
    const t = await thopter();
    t.writeToken(t.token);
    const tmux = new Tmux('activity');
    tmux.start();
    const quiet = path.join(world.dir, `quiet-${t.id}`);
    // Output every 100 ms until the test says stop: the pane changes at every capture.
    tmux.type(`while [ ! -e ${quiet} ]; do date +%s%N; sleep 0.1; done; clear`);
    const obs = observe(t, statusUrl(t.id), { TMUX_TMPDIR: tmux.dir });

    const active = await waitFor('the session shown active', async () => {
      const s = await session(t.id);
      return s?.state === 'active' && s;
    });
    assert.equal(active.source, 'observer');
    assert.match(active.screen, /\d{19}/, 'the screen dump is the pane');
    assert.equal(active.idleSince, undefined);

    writeFileSync(quiet, '');
    const idle = await waitFor('the session shown idle', async () => {
      const s = await session(t.id);
      return s?.state === 'idle' && s;
    });
    assert.ok(idle.idleSince, 'idle comes with idleSince');
    assert.ok(Date.parse(idle.idleSince) >= Date.parse(idle.lastActivity) + 1500);
    assert.ok(Date.parse(idle.lastActivity) > Date.parse(active.lastActivity));

    const marker = `back-${randomBytes(4).toString('hex')}`;
    tmux.type(`echo ${marker}`);
    const again = await waitFor('the session shown active again', async () => {
      const s = await session(t.id);
      return s?.state === 'active' && s.screen.includes(marker) && s;
    });
    assert.equal(again.idleSince, undefined);
    assert.ok(Date.parse(again.lastActivity) > Date.parse(idle.idleSince));
    assert.equal(obs.child.exitCode, null);
    // Each change is logged once: active, idle, active (it may have gone idle again since).
    const changes = await waitFor('the observer to log the three changes', () => {
      const seen = obs.lines(/observer: session (active|idle)\b/).map((l) => /session (\w+)/.exec(l)![1]);
      return seen.length >= 3 && seen.slice(0, 3);
    });
    assert.deepEqual(changes, ['active', 'idle', 'active'], obs.output());
  });

  it('tells whether the agent process runs (tmux reached through -S)', async () => {
    const t = await thopter();
    t.writeToken(t.token);
    const tmux = new Tmux('agent');
    tmux.start();
    const name = `claude-${randomBytes(3).toString('hex')}`;
    // The kernel names a process after the file it runs: a copy of sleep called claude-… is
    // what `pgrep -x` matches, as it matches `claude` in a thopter.
    const agentFile = path.join(world.dir, name);
    copyFileSync('/bin/sleep', agentFile);
    execFileSync('chmod', ['+x', agentFile]);
    observe(t, statusUrl(t.id), { OBSERVER_TMUX_SOCKET: tmux.socket, OBSERVER_AGENT_PROCESS: name });

    await waitFor('the agent shown not running', async () => (await session(t.id))?.agentRunning === false);
    const agent = spawn(agentFile, ['600'], { stdio: 'ignore' });
    const agentExited = new Promise((resolve) => agent.once('exit', resolve));
    cleanups.push(async () => {
      if (agent.exitCode === null && agent.signalCode === null) agent.kill('SIGKILL');
      await agentExited;
    });
    const running = await waitFor('the agent shown running', async () => {
      const s = await session(t.id);
      return s?.agentRunning === true && s;
    });
    assert.equal(running.state === 'active' || running.state === 'idle', true);
    agent.kill('SIGTERM');
    await agentExited;
    await waitFor('the agent shown gone', async () => (await session(t.id))?.agentRunning === false);
  });

  it('reports the session stopped when tmux is gone, and active when it is back', async () => {
    const t = await thopter();
    t.writeToken(t.token);
    const tmux = new Tmux('gone');
    tmux.start();
    const marker = `last-words-${randomBytes(4).toString('hex')}`;
    tmux.type(`echo ${marker}`);
    const obs = observe(t, statusUrl(t.id), { TMUX_TMPDIR: tmux.dir });
    await waitFor('the pane shown', async () => (await session(t.id))?.screen.includes(marker));

    tmux.killServer();
    const stopped = await waitFor('the session shown stopped', async () => {
      const s = await session(t.id);
      return s?.state === 'stopped' && s;
    });
    assert.match(stopped.screen, new RegExp(marker), 'the last screen seen stays visible');
    assert.equal((await obs.said(/session stopped, agent \w+ \(tmux: /)).length, 1, obs.output());

    tmux.start();
    await waitFor('the session shown active again', async () => {
      const s = await session(t.id);
      return s?.state === 'active' && !s.screen.includes(marker);
    });
    assert.equal(obs.child.exitCode, null);
  });

  it('waits for its token, says clearly when the hub refuses it, and posts once it is right', async () => {
    const t = await thopter();
    const tmux = new Tmux('token');
    tmux.start();
    const proxy = await new HubProxy(hub.url).open();
    const obs = observe(t, proxy.statusUrl(t.id), { TMUX_TMPDIR: tmux.dir });

    await obs.said(/no status token in .*yet/);
    t.writeToken('not-this-thopters-token-0123456789abcdef');
    await waitFor('three refused posts', () => proxy.count(401) >= 3);
    const refused = await obs.said(/\(401 /);
    assert.equal(refused.length, 1, `one line for the refusal, not one per post:\n${obs.output()}`);
    assert.match(refused[0]!, /refused the status token \(401 unauthorized\).*status-token/);
    assert.doesNotMatch(obs.output(), /not-this-thopters-token/, 'the token is never logged');
    assert.equal(obs.child.exitCode, null, 'it keeps running');
    assert.equal(await session(t.id), null, 'a refused post changes nothing');

    t.writeToken(t.token);
    await waitFor('the session posted with the right token', async () => (await session(t.id))?.source);
    await obs.said(/takes status posts again \(204\)/);
  });

  it('carries the issue context from issue.json once the hub has written it', async () => {
    const t = await thopter();
    t.writeToken(t.token);
    const tmux = new Tmux('issue');
    tmux.start();
    const proxy = await new HubProxy(hub.url).open();
    observe(t, proxy.statusUrl(t.id), { TMUX_TMPDIR: tmux.dir });
    await waitFor('a post', () => proxy.count(204) > 0);
    assert.equal(proxy.lastBody.repository, undefined, 'no issue.json yet: no issue context');

    // What the write-context phase writes (src/processors/phases/write-context.ts).
    writeFileSync(
      t.issueFile,
      JSON.stringify({
        source: 'github',
        thopterId: t.id,
        repository: 'acme/widgets',
        workBranch: 'thopter/42--m1',
        github: {
          issueNumber: '42',
          issueTitle: 'observe me',
          issueBody: 'x'.repeat(100_000),
          issueUrl: 'https://github.com/acme/widgets/issues/42',
          comments: [{ author: 'a', body: 'b', createdAt: new Date().toISOString() }],
        },
      }),
    );
    const body = await waitFor(
      'a post with the issue context',
      () => proxy.lastBody.repository && proxy.lastBody,
    );
    assert.deepEqual(
      { repository: body.repository, github: body.github },
      {
        repository: 'acme/widgets',
        github: {
          issueNumber: '42',
          issueTitle: 'observe me',
          issueUrl: 'https://github.com/acme/widgets/issues/42',
        },
      },
      'the issue body and comments stay on the machine',
    );
    assert.equal(proxy.answers.at(-1), 204);
  });

  it('backs off while the hub is down or failing, logs each change once, and posts again when it is back', async () => {
    const t = await thopter();
    t.writeToken(t.token);
    const tmux = new Tmux('outage');
    tmux.start();
    const proxy = await new HubProxy(hub.url).open();
    const obs = observe(t, proxy.statusUrl(t.id), { TMUX_TMPDIR: tmux.dir });
    await waitFor('a post', async () => (await session(t.id))?.source);

    // Down: nothing listens on the hub's port.
    await proxy.close();
    await obs.said(/unreachable/);
    // Still down, but accepting connections and dropping them.
    proxy.mode = 'drop';
    await proxy.open();
    await waitFor('three dropped posts', () => proxy.dropped >= 3);
    // Up, and failing.
    proxy.mode = 'fail';
    await waitFor('three posts answered 503', () => proxy.count(503) >= 3);
    assert.equal(obs.lines(/unreachable/).length, 1, `one line for the outage:\n${obs.output()}`);
    assert.equal((await obs.said(/answers 503/)).length, 1, `one line for the failures:\n${obs.output()}`);

    const backAt = Date.now();
    proxy.mode = 'forward';
    await waitFor('posts to resume', async () => Date.parse((await session(t.id))?.updatedAt ?? '') > backAt);
    await obs.said(/takes status posts again \(204\) after \d+ failed/);
    assert.equal(obs.child.exitCode, null);
  });

  it('posts a final stopped status on SIGTERM and exits 0', async () => {
    const t = await thopter();
    t.writeToken(t.token);
    const tmux = new Tmux('sigterm');
    tmux.start();
    const obs = observe(t, statusUrl(t.id), { TMUX_TMPDIR: tmux.dir });
    await waitFor('the session shown active', async () => (await session(t.id))?.state === 'active');
    obs.child.kill('SIGTERM');
    assert.equal(await obs.exited, 0);
    assert.equal((await session(t.id))?.state, 'stopped');
    assert.match(obs.output(), /took the final stopped status \(204\)/);
  });

  it('exits 0 on SIGINT when the thopter has ended: the hub takes the post without recording it', async () => {
    const t = await thopter();
    t.writeToken(t.token);
    const tmux = new Tmux('sigint');
    tmux.start();
    const obs = observe(t, statusUrl(t.id), { TMUX_TMPDIR: tmux.dir });
    await waitFor('the session shown active', async () => (await session(t.id))?.state === 'active');
    await hub.store.finish(t.id, 'destroyed', 'destroyed by the test');
    obs.child.kill('SIGINT');
    assert.equal(await obs.exited, 0);
    assert.match(obs.output(), /took the final stopped status \(202\)/);
    assert.notEqual((await session(t.id))?.state, 'stopped', 'an ended thopter keeps its last session');
  });
});

describe('the status endpoint, as observers meet it', () => {
  const post = (id: string, body: unknown, token: string) =>
    api(hub.url, 'POST', `/api/thopters/${id}/status`, body, token);
  const status = (id: string, lastActivity: string, tmuxState = 'active') => ({
    thopterId: id,
    tmuxState,
    claudeProcess: 'running',
    screenDump: 'working',
    lastActivity,
    spawnedAt: lastActivity,
  });

  it('refuses a wrong token with 401 whatever the body, and says what is wrong only to the thopter', async () => {
    const t = await thopter();
    const other = await thopter();
    const bad = { ...status(t.id, new Date().toISOString()), tmuxState: 'sleepy' };
    for (const [body, token] of [
      [bad, other.token],
      ['{"not json', other.token],
      [status(other.id, new Date().toISOString()), other.token],
      [status(t.id, new Date().toISOString()), other.token],
    ] as const) {
      const r = await post(t.id, body, token);
      assert.equal(r.status, 401, JSON.stringify(r.body));
      assert.doesNotMatch(JSON.stringify(r.body), /tmuxState|JSON|thopterId/);
    }
    assert.equal(
      (await post('thopter-000000000000', status('thopter-000000000000', new Date().toISOString()), t.token))
        .status,
      401,
    );
    const own = await post(t.id, bad, t.token);
    assert.equal(own.status, 400);
    assert.match(own.body.error.message, /tmuxState/);
    assert.equal(await session(t.id), null, 'nothing refused was recorded');
  });

  it('tells listeners of a post only when what they show changed, and records every post', async () => {
    const t = await thopter();
    const listener = world.client.duplicate();
    cleanups.push(() => listener.disconnect());
    const heard: string[] = [];
    listener.on('message', (_channel: string, id: string) => heard.push(id));
    await listener.subscribe(hub.store.sessionChannel);
    const at = new Date().toISOString();

    assert.equal((await post(t.id, status(t.id, at), t.token)).status, 204);
    const first = (await session(t.id))!;
    assert.equal((await post(t.id, status(t.id, at), t.token)).status, 204);
    const again = (await session(t.id))!;
    assert.ok(again.updatedAt >= first.updatedAt, 'the unchanged status is recorded (updatedAt)');
    await post(t.id, status(t.id, at, 'idle'), t.token);
    // A marker after the posts: once it is heard, everything before it has been.
    await world.client.publish(hub.store.sessionChannel, 'marker');
    await waitFor('the marker', () => heard.includes('marker'));
    assert.deepEqual(
      heard.filter((id) => id === t.id),
      [t.id, t.id],
      'the first post and the change to idle were announced; the repeat was not',
    );
  });
});

describe('observer pieces', () => {
  it('keeps the bottom lines of a screen that is too large, in whole lines', () => {
    const screen = Array.from({ length: 100 }, (_, i) => `line ${i} ${'é'.repeat(20)}`).join('\n');
    const kept = truncateScreen(screen, 500);
    assert.ok(Buffer.byteLength(kept) <= 500);
    assert.ok(kept.endsWith('line 99 ' + 'é'.repeat(20)));
    assert.match(kept, /^line \d+ /, 'starts at a whole line');
    assert.equal(truncateScreen('short', 500), 'short');
    const oneLine = '€'.repeat(400);
    const tail = truncateScreen(oneLine, 100);
    assert.ok(Buffer.byteLength(tail) <= 100 && /^€+$/.test(tail), 'a long line keeps whole characters');
  });

  it('backs off exponentially up to the cap, with jitter in the upper half', () => {
    const low = () => 0;
    const high = () => 1;
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6, 7].map((n) => backoffDelay(n, 3000, 60_000, high)),
      [3000, 6000, 12_000, 24_000, 48_000, 60_000, 60_000],
    );
    assert.equal(backoffDelay(3, 3000, 60_000, low), 6000);
    assert.equal(backoffDelay(1000, 3000, 60_000, high), 60_000);
  });

  it('reads what it posts from issue.json, and nothing from anything else', () => {
    assert.deepEqual(
      parseIssueJson('{"repository":"o/r","github":{"issueNumber":"7","issueTitle":"t","issueBody":"b"}}'),
      { repository: 'o/r', issueNumber: '7', issueTitle: 't', issueUrl: undefined },
    );
    assert.equal(parseIssueJson('{"repository": 5}'), undefined);
    assert.equal(parseIssueJson('not json'), undefined);
  });
});
