import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_AGENT_COMMAND } from '../src/config.js';
import type { Hub } from '../src/hub.js';
import { buildObserver } from '../thopter/observer/build.js';
import { FakeAnthropic } from './fakes/anthropic.js';
import { startFakeFly, type FakeFly, type FlyMachine } from './fakes/fly.js';
import { startFakeGitHub, type FakeGitHub } from './fakes/github.js';
import { CLAUDE_BIN_DIR, claudeEnvFile, TEST_API_KEY } from './helpers/claude.js';
import { api, freePort, TestWorld } from './helpers/env.js';
import { GitHttpServer } from './helpers/git-http.js';
import { MachineHost } from './helpers/machine-host.js';
import { waitFor } from './helpers/wait.js';

/**
 * A stall on THOPTER_PROVIDER=fly, with the machinery of test/agent-fly.test.ts (the fake Machines
 * API, a real sshd and the image's real init per machine, the real Claude Code as the thopter user,
 * the real observer bundle posting its screen): the hub judges the observer's screen and reads the
 * transcript over SSH.
 */

const world = new TestWorld();
const REPO = 'acme/widget';
const ISSUES_PAT = 'ghp_ISSUES_pat_for_the_hub_0001';
const AGENT_PAT = 'ghp_AGENTCODER_pat_0123456789abcdef';
const FLY_TOKEN = 'fly_test_token_0123456789';

let fly: FakeFly;
let host: MachineHost;
let git: GitHttpServer;
let gh: FakeGitHub;
let model: FakeAnthropic;
let hub: Hub;
let bare: string;
let releaseAnswer!: () => void;
const answerHeld = new Promise<void>((resolve) => (releaseAnswer = resolve));

const live = (thopterId: string): FlyMachine[] =>
  fly.machines().filter((m) => m.config.metadata?.thopter_id === thopterId && m.state !== 'destroyed');

before(async () => {
  await world.start();
  const root = path.join(world.dir, 'git');
  mkdirSync(path.join(root, 'acme'), { recursive: true });
  bare = path.join(root, 'acme', 'widget.git');
  execFileSync('git', ['clone', '-q', '--bare', world.origin('widget'), bare]);
  git = await new GitHttpServer(root, AGENT_PAT).start();

  gh = await startFakeGitHub();
  gh.addToken(ISSUES_PAT, 'thopter-hub');
  gh.addRepo(REPO, { cloneUrl: `${git.url}/acme/widget.git` });
  gh.setPermission(REPO, 'thopter-hub', 'write');

  const sshPort = await freePort();
  host = new MachineHost({ port: sshPort, baseDir: path.join(world.dir, 'machines') });
  fly = await startFakeFly({
    tokens: [FLY_TOKEN],
    bootMs: 300,
    onStart: (m) =>
      host.start({
        id: m.id,
        env: m.config.env,
        files: m.config.files?.map((f) => ({ ...f, raw_value: f.raw_value ?? '' })),
      }),
    onStop: (m) => host.stop(m.id),
  });

  model = await new FakeAnthropic({
    apiKey: TEST_API_KEY,
    // The model never answers, until the test lets it: a hung API request.
    script: [{ text: 'Sorry, I was slow.', after: answerHeld }],
  }).start();

  // The machines share the host's network and file system (but for their own /data, /thopter and
  // /tmp): they reach the scripted API on loopback and the pinned Claude Code where npm put it.
  const envFile = claudeEnvFile(path.join(world.dir, 'fixtures'), model.url);
  execFileSync('bash', [
    '-c',
    `echo "PATH=${CLAUDE_BIN_DIR}:/usr/local/bin:/usr/bin:/bin" >> "$1"`,
    'bash',
    envFile,
  ]);
  hub = await world.hub({
    THOPTER_PROVIDER: 'fly',
    // A port of its own: the machines' observers post to the address the hub listens on.
    HUB_PORT: String(await freePort()),
    FLY_API_URL: fly.url,
    FLY_API_TOKEN: FLY_TOKEN,
    APP_NAME: 'thopters',
    REGION: 'ord',
    THOPTER_IMAGE: 'registry.fly.io/thopters:test',
    THOPTER_SSH_HOST: '{private_ip}',
    THOPTER_SSH_PORT: String(sshPort),
    THOPTER_AGENT_COMMAND: DEFAULT_AGENT_COMMAND,
    THOPTER_ENV_FILE: envFile,
    THOPTER_STALL_AFTER: '5s',
    GITHUB_API_URL: gh.url,
    GITHUB_INTEGRATION_JSON: JSON.stringify({
      repositories: { [REPO]: { issuesPAT: ISSUES_PAT, agentCoderPAT: AGENT_PAT } },
    }),
  });

  // A golden claude made through the API, then logged in as a user would (test/helpers/claude.ts
  // says what that leaves): here the folder holding the workspace is the thopter user's home.
  assert.equal((await api(hub.url, 'POST', '/api/golden-claudes', { name: 'default' })).status, 201);
  const gc = await waitFor('gc-default to start', () =>
    fly.machines().find((m) => m.name === 'gc-default' && m.state === 'started'),
  );
  await waitFor(
    'gc-default to finish its init',
    async () => (await host.run(gc.id, 'test -f /thopter/ready')).code === 0,
  );
  const claudeJson = JSON.stringify({
    hasCompletedOnboarding: true,
    customApiKeyResponses: { approved: [TEST_API_KEY.slice(-20)], rejected: [] },
    projects: { '/data/thopter': { hasTrustDialogAccepted: true } },
  });
  const login = await host.run(
    gc.id,
    [
      'set -e',
      'cd /data/thopter',
      `printf '%s' '${claudeJson}' > .claude.json`,
      'mkdir -p .claude',
      `printf '%s' '{"skipDangerousModePermissionPrompt": true}' > .claude/settings.json`,
      'chown -R thopter:thopter /data/thopter',
    ].join('\n'),
  );
  assert.equal(login.code, 0, login.stderr);
});

after(async () => {
  releaseAnswer();
  await world.closeHubs();
  await model?.close();
  await fly?.close();
  await host?.stopAll();
  await git?.close();
  await gh?.close();
  await world.close();
});

describe('a stall on a Fly machine', () => {
  it("is reported from the observer's screen and the transcript read over SSH, and ends when the model answers", async () => {
    const issue = gh.addIssue(REPO, { title: 'Add a greeting', body: 'Say hello.', user: 'alice' });
    const res = await api(hub.url, 'POST', '/api/thopters', { repository: REPO, issueNumber: issue.number });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    const id: string = res.body.id;
    await waitFor(
      'the thopter to run',
      async () => {
        const t = await hub.store.get(id);
        assert.notEqual(t?.state, 'failed', JSON.stringify(t?.phases));
        return t?.state === 'running' ? t : undefined;
      },
      { timeoutMs: 120_000 },
    );
    const machine = live(id)[0]!;
    // The observer, as pm2 would start it (thopter/ecosystem.config.cjs), faster than the seed's.
    const bundle = await buildObserver(
      path.join(world.dir, 'machines', machine.id, 'fs', 'thopter', 'observer.mjs'),
    );
    const vars = [
      'HOME=/data/thopter',
      'USER=thopter',
      `HUB_STATUS_URL=${machine.config.env?.HUB_STATUS_URL}`,
      `THOPTER_ID=${machine.config.env?.THOPTER_ID}`,
      'OBSERVER_INTERVAL_MS=500',
      'OBSERVER_IDLE_AFTER_MS=3000',
    ];
    const started = await host.run(
      machine.id,
      `cd /data/thopter && (runuser -u thopter -- env ${vars.join(' ')} ${process.execPath} /thopter/${path.basename(bundle)} >/thopter/logs-observer.log 2>&1 &)`,
    );
    assert.equal(started.code, 0, started.stderr);
    await waitFor('its model to be asked', () => model.stepsTaken >= 1, { timeoutMs: 120_000 });

    const stalled = await waitFor(
      'the stall',
      async () => {
        const v = (await api(hub.url, 'GET', `/api/thopters/${id}`)).body;
        return v.stalledSince ? v : undefined;
      },
      { timeoutMs: 120_000 },
    );
    assert.equal(stalled.session.source, 'observer');
    assert.equal(stalled.stalls, 1);
    assert.ok(stalled.events.some((e: { type: string }) => e.type === 'stalled'));

    releaseAnswer();
    await waitFor(
      'the stall to end',
      async () => {
        const v = (await api(hub.url, 'GET', `/api/thopters/${id}`)).body;
        return v.stalledSince === null && v.events.some((e: { type: string }) => e.type === 'unstalled');
      },
      { timeoutMs: 90_000 },
    );
  });
});
