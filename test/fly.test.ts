import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { WebSocket } from 'ws';
import type { Hub } from '../src/hub.js';
import { startFakeFly, type FakeFly, type FlyMachine } from './fakes/fly.js';
import { startFakeGitHub, type FakeGitHub } from './fakes/github.js';
import { AGENT, api, freePort, TestWorld, TOKEN } from './helpers/env.js';
import { GitHttpServer } from './helpers/git-http.js';
import { MachineHost } from './helpers/machine-host.js';
import { waitFor } from './helpers/wait.js';

/**
 * THOPTER_PROVIDER=fly end to end: the hub's real Machines API client against the fake Fly API,
 * and its real SSH transport against a real sshd for each machine (test/helpers/machine-host.ts:
 * a mount and pid namespace per machine standing for the thopter image). The repository is served
 * over HTTP by `git http-backend` and wants the agentCoderPAT, as github.com does for a private one.
 */

const world = new TestWorld();
const REPO = 'acme/widget';
const ISSUES_PAT = 'ghp_ISSUES_pat_for_the_hub_0001';
const AGENT_PAT = 'ghp_AGENTCODER_pat_0123456789abcdef';
const FLY_TOKEN = 'fly_test_token_0123456789';
const run = promisify(execFile);

let fly: FakeFly;
let host: MachineHost;
let git: GitHttpServer;
let gh: FakeGitHub;
let bare: string;
let sshPort: number;
/** Makes the next machine's boot fail, as a Fly machine's sometimes does. */
let failNextBoot = false;

const thopterMachines = (thopterId: string) =>
  fly.machines().filter((m) => m.config.metadata?.thopter_id === thopterId);
const live = (ms: FlyMachine[]) => ms.filter((m) => m.state !== 'destroyed');

function env(overrides: Record<string, string> = {}): Record<string, string> {
  return {
    THOPTER_PROVIDER: 'fly',
    FLY_API_URL: fly.url,
    FLY_API_TOKEN: FLY_TOKEN,
    APP_NAME: 'thopters',
    REGION: 'ord',
    THOPTER_IMAGE: 'registry.fly.io/thopters:test',
    THOPTER_SSH_HOST: '{private_ip}',
    THOPTER_SSH_PORT: String(sshPort),
    // The agent script reaches the thopter through the golden claude's home, as a login would.
    THOPTER_AGENT_COMMAND: 'bash ~/agent.sh',
    GITHUB_API_URL: gh.url,
    GITHUB_INTEGRATION_JSON: JSON.stringify({
      repositories: {
        [REPO]: {
          issuesPAT: ISSUES_PAT,
          agentCoderPAT: AGENT_PAT,
          userName: 'Widget Bot',
          userEmail: 'bot@widget.test',
        },
        'acme/broken': { issuesPAT: ISSUES_PAT, agentCoderPAT: AGENT_PAT },
      },
    }),
    ...overrides,
  };
}

before(async () => {
  await world.start();
  // origin: a bare repository served over smart HTTP, wanting the agentCoderPAT
  const root = path.join(world.dir, 'git');
  mkdirSync(path.join(root, 'acme'), { recursive: true });
  bare = path.join(root, 'acme', 'widget.git');
  execFileSync('git', ['clone', '-q', '--bare', world.origin('widget'), bare]);
  git = await new GitHttpServer(root, AGENT_PAT).start();

  gh = await startFakeGitHub();
  gh.addToken(ISSUES_PAT, 'thopter-hub');
  gh.addRepo(REPO, { cloneUrl: `${git.url}/acme/widget.git` });
  gh.addRepo('acme/broken', { cloneUrl: `${git.url}/acme/missing.git` });
  gh.setPermission(REPO, 'thopter-hub', 'write');
  gh.setPermission('acme/broken', 'thopter-hub', 'write');

  sshPort = await freePort();
  host = new MachineHost({ port: sshPort, baseDir: path.join(world.dir, 'machines') });
  fly = await startFakeFly({
    tokens: [FLY_TOKEN],
    bootMs: 300,
    onStart: (m) => {
      if (failNextBoot) {
        failNextBoot = false;
        return Promise.reject(new Error('the boot failed (injected by the test)'));
      }
      return host.boot(m).catch((err: Error) => {
        // A machine that cannot boot stops (as on Fly); the reason is for whoever reads the run.
        console.error(`machine ${m.name} (${m.id}) did not boot: ${err.message}`);
        throw err;
      });
    },
    onStop: (m) => host.stop(m.id),
  });
});

after(async () => {
  await world.closeHubs();
  await fly?.close();
  await host?.stopAll();
  await git?.close();
  await gh?.close();
  await world.close();
});

describe('THOPTER_PROVIDER=fly', () => {
  let hub: Hub;
  const logs: string[] = [];
  let gcMachine: FlyMachine;

  /** Opens an issue, launches a thopter for it through the API, and waits until it runs. */
  async function launchIssue(title: string) {
    const issue = gh.addIssue(REPO, { title, body: 'Say hello.', user: 'alice' });
    const launched = await api(hub.url, 'POST', '/api/thopters', {
      repository: REPO,
      issueNumber: issue.number,
    });
    assert.equal(launched.status, 202, JSON.stringify(launched.body));
    const id = (launched.body as { id: string }).id;
    return waitFor(
      `"${title}" to run`,
      async () => {
        const t = await hub.store.get(id);
        // On failure, what the fake saw of the thopter's machines says why (a boot that failed).
        const seen = () =>
          JSON.stringify(thopterMachines(id).map((m) => ({ state: m.state, events: m.events })));
        assert.notEqual(t?.state, 'failed', `${JSON.stringify(t?.phases)}\nmachines: ${seen()}`);
        return t?.state === 'running' ? t : undefined;
      },
      { timeoutMs: 90_000 },
    );
  }

  before(async () => {
    hub = await world.hub(env(), logs);
    // A golden claude made through the API, then "logged in" by hand, as an operator would.
    const made = await api(hub.url, 'POST', '/api/golden-claudes', { name: 'default' });
    assert.equal(made.status, 201, JSON.stringify(made.body));
    gcMachine = await waitFor('gc-default to start', () =>
      fly.machines().find((m) => m.name === 'gc-default' && m.state === 'started'),
    );
    await waitFor('gc-default to finish its init', async () => {
      const r = await host.run(gcMachine.id, 'test -f /thopter/ready');
      return r.code === 0;
    });
    const agent = readFileSync(AGENT).toString('base64');
    const setup = await host.run(
      gcMachine.id,
      [
        'set -e',
        'cd /data/thopter',
        `echo ${agent} | base64 -d > agent.sh`,
        'mkdir -p .claude/projects/old-session',
        `echo '{"theme":"dark"}' > .claude/settings.json`,
        'echo "secret session" > .claude/projects/old-session/log.jsonl',
        'echo "# the golden claude\'s own bashrc" > .bashrc',
        'chown -R thopter:thopter /data/thopter',
      ].join('\n'),
    );
    assert.equal(setup.code, 0, setup.stderr);
    const list = await api(hub.url, 'GET', '/api/golden-claudes');
    assert.deepEqual(
      (list.body as { goldenClaudes: { name: string }[] }).goldenClaudes.map((g) => g.name),
      ['default'],
    );
  });

  it('provisions over one SSH connection, copies the golden claude, clones with the token kept in a file, and the agent pushes', async () => {
    // Process arguments are sampled all through the provision: the token must never be one.
    const argvSeen = new Set<string>();
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const ps = await run('ps', ['-eo', 'args']).catch(() => ({ stdout: '' }));
        for (const line of ps.stdout.split('\n')) argvSeen.add(line);
        await new Promise((r) => setTimeout(r, 25));
      }
    })();

    const running = await launchIssue('Add a greeting');
    const { id } = running;
    const machine = running.machine!;
    await waitFor('the work branch pushed to origin', () =>
      world.branches(bare).includes(machine.workBranch),
    );
    sampling = false;
    await sampler;

    // The Fly machine: seed phase 2's shape, found by metadata, secrets as files only.
    const [m] = live(thopterMachines(id));
    assert.ok(m, 'a Fly machine carries the thopter id');
    assert.equal(machine.providerId, m.id, "the record names Fly's machine id");
    assert.equal(m.name, `thopter-${running.request.issue.number}-${machine.id}`);
    assert.equal(m.config.metadata?.thopter_swarm, 'tw');
    assert.equal(m.config.metadata?.thopter_request, running.request.id);
    assert.deepEqual(m.config.guest, { cpu_kind: 'shared', cpus: 1, memory_mb: 256 });
    assert.equal(m.config.env?.REPOSITORY, REPO);
    assert.equal(m.config.env?.GIT_USER_NAME, 'Widget Bot');
    const volume = fly.volumes().find((v) => v.id === m.config.mounts?.[0]?.volume);
    assert.equal(volume?.name, 'thopter_data');
    assert.equal(m.config.mounts?.[0]?.path, '/data');
    const token = m.config.files?.find((f) => f.guest_path === '/etc/thopter/status-token');
    assert.equal(token?.mode, 0o600);
    assert.doesNotMatch(
      JSON.stringify(m.config),
      new RegExp(AGENT_PAT),
      'the PAT is not in the machine config',
    );

    // One SSH connection for every phase of the provision.
    assert.equal(host.logins(m.id), 1, 'all phases ran over one SSH connection');

    // Inside the machine.
    const inside = async (script: string) => {
      const r = await host.run(m.id, script);
      assert.equal(r.code, 0, `${script}: ${r.stderr}`);
      return r.stdout.trim();
    };
    assert.equal(await inside('cat /data/thopter/.claude/settings.json'), '{"theme":"dark"}');
    assert.equal(await inside('stat -c %U /data/thopter/.claude/settings.json'), 'thopter');
    assert.equal(await inside('test -e /data/thopter/.claude/projects && echo yes || echo no'), 'no');
    assert.doesNotMatch(await inside('cat /data/thopter/.bashrc'), /golden claude's own/);
    const repoDir = '/data/thopter/workspace/widget';
    const gitConfig = await inside(`cat ${repoDir}/.git/config`);
    assert.doesNotMatch(gitConfig, new RegExp(AGENT_PAT), 'the token is not in .git/config');
    assert.match(gitConfig, /url = http:\/\/127\.0\.0\.1:\d+\/acme\/widget\.git/);
    assert.match(gitConfig, /helper = !\/data\/thopter\/\.thopter\/git-credential/);
    assert.equal(await inside('stat -c "%U %a" /data/thopter/.thopter/git-token'), 'thopter 600');
    assert.match(await inside(`cat ${repoDir}/THOPTER_WORK.md`), /work for the task/);
    assert.match(await inside('cat /thopter/log'), /launched the agent/);
    assert.ok(
      git.requests.some((r) => r.authorized && r.path.endsWith('git-receive-pack')),
      'the push was authorized with the token',
    );

    // No secret in logs, Redis (job data, records), or any process's arguments.
    const everything = [logs.join(''), await world.redisText(), [...argvSeen].join('\n')];
    for (const secret of [AGENT_PAT, ISSUES_PAT, FLY_TOKEN]) {
      for (const text of everything) assert.ok(!text.includes(secret), `a secret leaked: ${secret}`);
    }
    assert.ok(argvSeen.size > 10, 'processes were sampled');

    // Work the agent left uncommitted: the save before the teardown commits it and pushes it over SSH.
    await inside(`runuser -u thopter -- sh -c 'echo unsaved work > ${repoDir}/UNSAVED.md'`);

    // Destroy: the machine stops and is deleted; its volume goes back to the pool.
    const destroyed = await api(hub.url, 'DELETE', `/api/thopters/${id}`);
    assert.equal(destroyed.status, 202);
    await waitFor('the Fly machine to be destroyed', () => fly.machine(m.id)?.state === 'destroyed');
    await waitFor('the record to close', async () => (await hub.store.get(id))?.state === 'destroyed');
    const onOrigin = (args: string[]) =>
      execFileSync('git', ['-C', bare, ...args], { encoding: 'utf8' }).trim();
    assert.equal(
      onOrigin(['log', '-1', '--format=%s / %an', machine.workBranch]),
      'thopter: save work (destroyed through the API) / Widget Bot',
    );
    assert.equal(onOrigin(['show', `${machine.workBranch}:UNSAVED.md`]), 'unsaved work');
    assert.equal((await hub.store.get(id))?.saved?.pushed, true);
    assert.ok(!(await world.redisText()).includes(AGENT_PAT), 'the save put no secret in Redis');
    await assert.rejects(host.run(m.id, 'true'), 'no process of the machine is left');
    assert.equal(fly.volumes().find((v) => v.id === volume!.id)?.attached_machine_id ?? null, null);
    assert.ok(
      fly.requests.some((r) => r.method === 'POST' && r.path.endsWith(`/machines/${m.id}/stop`)),
      'stopped before it was deleted',
    );
  });

  it('does not copy a golden claude while Claude runs on it, and says why', async () => {
    const started = await host.run(
      gcMachine.id,
      'cp /bin/sleep /tmp/claude && chmod 755 /tmp/claude && (runuser -u thopter -- /tmp/claude 300 >/dev/null 2>&1 &)',
    );
    assert.equal(started.code, 0, started.stderr);
    try {
      const issue = gh.addIssue(REPO, { title: 'While Claude works', body: 'Say hello.', user: 'alice' });
      const launched = await api(hub.url, 'POST', '/api/thopters', {
        repository: REPO,
        issueNumber: issue.number,
      });
      assert.equal(launched.status, 202, JSON.stringify(launched.body));
      const id = (launched.body as { id: string }).id;
      const copying = await waitFor('copy-golden to be passed over', async () => {
        const t = await hub.store.get(id);
        return t?.phases['clone-repo'] ? t : undefined;
      });
      assert.equal(copying.phases['copy-golden']?.outcome, 'warning');
      assert.match(copying.phases['copy-golden']?.error ?? '', /Claude is running on gc-default/);
      const m = live(thopterMachines(id))[0]!;
      const r = await host.run(
        m.id,
        'test -e /data/thopter/.claude/settings.json && echo copied || echo not',
      );
      assert.equal(r.stdout.trim(), 'not');
      // The agent of these tests lives in the golden claude's home: without the copy it is
      // missing, and launch-agent says so with the terminal's own words, then the machine goes.
      const failed = await waitFor(
        'the thopter to fail at launch-agent',
        async () => {
          const t = await hub.store.get(id);
          return t?.state === 'failed' ? t : undefined;
        },
        { timeoutMs: 90_000 },
      );
      assert.match(failed.endReason ?? '', /^launch-agent failed: .*agent\.sh: No such file or directory/);
      await waitFor('its machine to be deleted', () => live(thopterMachines(id)).length === 0);
    } finally {
      await host.run(gcMachine.id, 'pkill -x claude; rm -f /tmp/claude');
    }
  });

  it("finds the machine an ambiguous 5xx made, waits out Fly's lack of capacity, and boots a machine again", async () => {
    // The create went through, but its answer was a 502: the hub must not make a second machine.
    fly.failNextCreates(1, 502, { committed: true });
    const ambiguous = await launchIssue('Ambiguous create');
    assert.equal(thopterMachines(ambiguous.id).length, 1, 'one machine, found by its metadata');
    // No capacity in the region: the create is tried again later.
    fly.failNextCreates(1, 'insufficient_capacity');
    const full = await launchIssue('Region full');
    assert.equal(thopterMachines(full.id).length, 1);
    assert.ok(full.phases['create-machine']!.attempts >= 2, 'the create was retried');
    // The machine stops instead of booting: it is started again.
    failNextBoot = true;
    const rebooted = await launchIssue('Failed boot');
    const [m] = live(thopterMachines(rebooted.id));
    assert.ok(fly.requests.some((r) => r.method === 'POST' && r.path.endsWith(`/machines/${m!.id}/start`)));
    assert.equal(thopterMachines(rebooted.id).length, 1);
    for (const t of [ambiguous, full, rebooted]) await api(hub.url, 'DELETE', `/api/thopters/${t.id}`);
    await waitFor('their machines to be deleted', () =>
      [ambiguous, full, rebooted].every((t) => live(thopterMachines(t.id)).length === 0),
    );
  });

  it("starts a running thopter's crashed machine again, saying so in its events, and ends the thopter when someone stops its machine", async () => {
    const t = await launchIssue('Crash and stop');
    const [m] = live(thopterMachines(t.id));
    const view = async () =>
      (await api(hub.url, 'GET', `/api/thopters/${t.id}`)).body as {
        state: string;
        endReason?: string;
        events: { type: string; message: string }[];
      };
    // Past Fly's own restarts, the machine's process died: the hub starts it again.
    fly.exitMachine(m!.id, 1);
    const restarted = await waitFor(
      'the hub to start the machine again',
      async () => (await view()).events.find((e) => e.type === 'machine-restarted'),
      { timeoutMs: 90_000 },
    );
    assert.match(restarted.message, /was stopped: exit code 1: started it again \(1 of 3\)/);
    await waitFor('the machine to run again', () => fly.machine(m!.id)?.state === 'started');
    assert.equal((await view()).state, 'running');

    // An operator stops it by hand: the hub does not overrule them, and the thopter ends saying why.
    const stop = await fetch(`${fly.url}/v1/apps/thopters/machines/${m!.id}/stop`, {
      method: 'POST',
      headers: { authorization: `Bearer ${FLY_TOKEN}` },
    });
    assert.equal(stop.status, 200);
    const ended = await waitFor(
      'the thopter to end',
      async () => {
        const v = await view();
        return v.state === 'destroyed' && v;
      },
      { timeoutMs: 90_000 },
    );
    assert.match(ended.endReason ?? '', /stopped on request, not by the hub/);
    await waitFor('its machine to be deleted', () => live(thopterMachines(t.id)).length === 0);
    assert.equal(
      fly.requests.filter((r) => r.path.endsWith(`/machines/${m!.id}`) && r.query.force).length,
      0,
    );
  });

  it('deletes the machine when a required phase fails', async () => {
    const issue = gh.addIssue('acme/broken', { title: 'Unclonable', body: 'x', user: 'alice' });
    const launched = await api(hub.url, 'POST', '/api/thopters', {
      repository: 'acme/broken',
      issueNumber: issue.number,
    });
    const id = (launched.body as { id: string }).id;
    const failed = await waitFor(
      'the thopter to fail',
      async () => {
        const t = await hub.store.get(id);
        return t?.state === 'failed' ? t : undefined;
      },
      { timeoutMs: 90_000 },
    );
    assert.equal(failed.phases['clone-repo']?.outcome, 'failed');
    assert.ok(thopterMachines(id).length === 1, 'one machine was made');
    await waitFor('its machine to be deleted', () => live(thopterMachines(id)).length === 0);
  });

  it("opens the dashboard's terminal on a Fly thopter: the hub attaches to its tmux over SSH", async () => {
    const t = await launchIssue('Watch me work');
    const login = await fetch(`${hub.url}/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: hub.url },
      body: new URLSearchParams({ token: TOKEN, next: '/' }).toString(),
      redirect: 'manual',
    });
    assert.equal(login.status, 303);
    const cookie = login.headers.get('set-cookie')!.split(';')[0]!;
    const ws = new WebSocket(`${hub.url.replace(/^http/, 'ws')}/thopters/${t.id}/terminal/ws`, {
      headers: { cookie, origin: hub.url },
    });
    let screen = '';
    const control: string[] = [];
    ws.on('message', (data, binary) =>
      binary ? (screen += data.toString()) : control.push(data.toString()),
    );
    try {
      await waitFor('the terminal to attach', () => control.some((m) => m.includes('"ready"')));
      await waitFor('the agent’s screen', () => screen.includes('agent: pushed'));
      ws.send(JSON.stringify({ type: 'input', data: 'typed-on-fly' }));
      const machine = live(thopterMachines(t.id))[0]!;
      await waitFor('the keys in the machine’s tmux session', async () => {
        const pane = await host.run(machine.id, "su thopter -c 'tmux capture-pane -p -t thopter'");
        return pane.stdout.includes('typed-on-fly');
      });
      await waitFor('their echo in the browser’s stream', () => screen.includes('typed-on-fly'));

      // The session log too is read over the same transport and rendered by the hub.
      const entry = JSON.stringify({
        type: 'assistant',
        message: { content: [{ type: 'text', text: 'Hello from Fly' }] },
      });
      const write = await host.run(
        machine.id,
        `su thopter -c 'mkdir -p ~/.claude/projects/p && echo ${Buffer.from(entry).toString('base64')} | base64 -d > ~/.claude/projects/p/s.jsonl'`,
      );
      assert.equal(write.code, 0, write.stderr);
      const log = await fetch(`${hub.url}/thopters/${t.id}/log?fragment=1`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      assert.match(await log.text(), /Claude[\s\S]*Hello from Fly/);
    } finally {
      ws.close();
      await api(hub.url, 'DELETE', `/api/thopters/${t.id}`);
    }
    await waitFor('its machine to be deleted', () => live(thopterMachines(t.id)).length === 0);
  });

  it('reconciliation destroys a machine marked as ours that no thopter owns, and leaves others alone', async () => {
    const marks = { thopter_swarm: 'tw', thopter_role: 'thopter' };
    const orphan = fly.addMachine({
      name: 'thopter-7-0badf00d',
      config: {
        image: 'registry.fly.io/thopters:test',
        metadata: { ...marks, thopter_id: 'thopter-00000000dead', thopter_machine: '0badf00d' },
      },
    });
    const foreign = fly.addMachine({ name: 'someone-elses', config: { image: 'nginx' } });
    await world.stopHub(hub);
    hub = await world.hub(env(), logs); // reconciliation runs at every start
    await waitFor('the orphan to be destroyed', () => fly.machine(orphan.id)?.state === 'destroyed');
    assert.equal(fly.machine(foreign.id)?.state, 'started', 'a machine that is not ours is left alone');
    assert.equal(fly.machine(gcMachine.id)?.state, 'started', 'the golden claude is left alone');
  });

  it('refuses an unknown golden claude at intake, naming those that exist', async () => {
    const r = await api(hub.url, 'POST', '/api/thopters', {
      repository: REPO,
      title: 't',
      body: 'b',
      gc: 'nope',
    });
    assert.equal(r.status, 422);
    const { message } = (r.body as { error: { message: string } }).error;
    assert.match(message, /no golden claude "nope"; the golden claudes are: default/);
  });
});

describe('THOPTER_PROVIDER=fly across a crash', () => {
  it('a hub killed -9 mid-provision leaves one machine, which the next hub finishes', async () => {
    const crashy = env({ HUB_LOCK_DURATION: '3s', HUB_STALLED_INTERVAL: '1s', LOG_LEVEL: 'warn' });
    host.holdReady(); // machines boot but do not finish their init until released
    const first = await world.spawnHub(crashy);
    const issue = gh.addIssue(REPO, { title: 'Crash test', body: 'Survive a crash.', user: 'alice' });
    const launched = await api(first.url, 'POST', '/api/thopters', {
      repository: REPO,
      issueNumber: issue.number,
    });
    const id = (launched.body as { id: string }).id;
    await waitFor('its Fly machine to be created', () => live(thopterMachines(id)).length === 1);
    first.child.kill('SIGKILL');
    await new Promise((r) => first.child.once('exit', r));
    host.release();

    const second = await world.spawnHub(crashy);
    await waitFor(
      'the thopter to run on the second hub',
      async () => {
        const r = await api(second.url, 'GET', `/api/thopters/${id}`);
        return (r.body as { state?: string }).state === 'running';
      },
      { timeoutMs: 120_000 },
    ).catch(async (err: Error) => {
      const record = await api(second.url, 'GET', `/api/thopters/${id}`);
      throw new Error(
        `${err.message}\nrecord: ${JSON.stringify(record.body)}\nsecond hub: ${second.output().slice(-3000)}`,
      );
    });
    assert.equal(thopterMachines(id).length, 1, 'exactly one machine was ever made for it');
    await api(second.url, 'DELETE', `/api/thopters/${id}`);
    await waitFor('its machine to be deleted', () => live(thopterMachines(id)).length === 0);
  });
});
