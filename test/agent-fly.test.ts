import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_AGENT_COMMAND } from '../src/config.js';
import type { Hub } from '../src/hub.js';
import { tellAgent } from '../src/processors/tell.js';
import { buildObserver } from '../thopter/observer/build.js';
import { bash, FakeAnthropic, userTexts } from './fakes/anthropic.js';
import { startFakeFly, type FakeFly, type FlyMachine } from './fakes/fly.js';
import { startFakeGitHub, type FakeGitHub } from './fakes/github.js';
import { CLAUDE_BIN_DIR, claudeEnvFile, TEST_API_KEY } from './helpers/claude.js';
import { api, freePort, TestWorld, TOKEN } from './helpers/env.js';
import { GitHttpServer } from './helpers/git-http.js';
import { MachineHost } from './helpers/machine-host.js';
import { waitFor } from './helpers/wait.js';

/**
 * The real Claude Code on THOPTER_PROVIDER=fly: the machinery of test/fly.test.ts (the fake
 * Machines API, a real sshd and the image's real init per machine, the repository over HTTP wanting
 * the agentCoderPAT), the agent as the unprivileged thopter user in the session init opened, and
 * the real observer bundle posting what it sees (pm2, which would start it, is not installed here).
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
    script: [
      { text: 'I will read my instructions.', tools: [bash('cat prompt.md', 'Read the instructions')] },
      (req) => {
        const branch = /thopter\/\d+--[a-f0-9]+/.exec(userTexts(req).join('\n'))?.[0];
        if (!branch) return { text: 'prompt.md names no work branch.' };
        return {
          tools: [
            bash(
              `cd widget && echo 'Hello from Fly' > GREETING.md && git add GREETING.md && git commit -qm 'Add a greeting' && git push -q origin ${branch}`,
              'Commit and push the greeting',
            ),
          ],
        };
      },
      { text: 'Pushed the greeting from Fly.', after: answerHeld },
    ],
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

describe('the real Claude Code on a Fly machine', () => {
  let id: string;
  let thopter: any;
  let machine: FlyMachine;
  const session = async () => (await api(hub.url, 'GET', `/api/thopters/${id}`)).body.session;

  it('provisions through the real init with the golden claude copied', async () => {
    const issue = gh.addIssue(REPO, { title: 'Add a greeting', body: 'Say hello.', user: 'alice' });
    const res = await api(hub.url, 'POST', '/api/thopters', { repository: REPO, issueNumber: issue.number });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    id = res.body.id;
    thopter = await waitFor(
      'the thopter to run',
      async () => {
        const t = await hub.store.get(id);
        assert.notEqual(t?.state, 'failed', JSON.stringify(t?.phases));
        return t?.state === 'running' ? t : undefined;
      },
      { timeoutMs: 120_000 },
    );
    assert.equal(thopter.phases['copy-golden']?.outcome, 'succeeded');
    machine = live(id)[0]!;
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
  });

  it('reads prompt.md, commits on the work branch and pushes it through its Bash tool', async () => {
    const branch = thopter.machine.workBranch;
    await waitFor('the work branch on origin', () => world.branches(bare).includes(branch), {
      timeoutMs: 120_000,
    });
    assert.equal(
      execFileSync('git', ['-C', bare, 'show', `${branch}:GREETING.md`], { encoding: 'utf8' }),
      'Hello from Fly\n',
    );
    const ps = await host.run(machine.id, 'ps -o user=,comm= -C claude');
    assert.match(ps.stdout, /^thopter\s+claude$/m, 'the agent runs as the thopter user, named claude');
  });

  it('is reported by the observer: running while the model works, then idle at its prompt', async () => {
    await waitFor('the model to be asked for its last answer', () => model.stepsTaken >= 3);
    const busy = await waitFor('the observer to report the agent working', async () => {
      const s = await session();
      if (!s) {
        const log = await host.run(machine.id, 'cat /thopter/logs-observer.log');
        throw new Error(`no session reported yet; the observer's log: ${log.stdout}${log.stderr}`);
      }
      return s?.source === 'observer' && s.agentRunning && s.state === 'active' ? s : undefined;
    });
    assert.doesNotMatch(busy.screen, /Pushed the greeting from Fly/);
    releaseAnswer();
    const idle = await waitFor(
      'the observer to report it idle at its prompt',
      async () => {
        const s = await session();
        return s?.state === 'idle' && /Pushed the greeting from Fly\./.test(s.screen) ? s : undefined;
      },
      { timeoutMs: 90_000 },
    );
    assert.equal(idle.agentRunning, true);
    // Claude Code's Stop hook marked the end of the turn on the machine; the observer posted it.
    const turns = await waitFor('the turn reported by the observer', async () => {
      const t = await hub.store.get(id);
      return t?.turns?.count ? t.turns : undefined;
    });
    assert.equal(turns.count, 1);
    const ended = (await hub.store.events(id)).filter((e) => e.type === 'turn-ended');
    assert.equal(ended.length, 1, 'one event, however many posts carried the count');
  });

  it("renders the transcript, read over SSH, in the dashboard's session log", async () => {
    const res = await fetch(`${hub.url}/thopters/${id}/log?fragment=1`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    const page = await res.text();
    assert.equal(res.status, 200);
    assert.match(page, /cat prompt\.md/);
    assert.match(page, /Pushed the greeting from Fly\./);
  });

  it('answers a second message typed into its terminal session', async () => {
    model.push({ text: 'Four, from Fly.' });
    const typed = await host.run(
      machine.id,
      `runuser -u thopter -- tmux send-keys -t thopter -l 'what is 2+2?' \\; send-keys -t thopter Enter`,
    );
    assert.equal(typed.code, 0, typed.stderr);
    await waitFor('the answer reported by the observer', async () =>
      /Four, from Fly\./.test((await session())?.screen ?? ''),
    );
    assert.ok(model.userTexts().includes('what is 2+2?'));
    await waitFor('the second turn reported', async () => (await hub.store.get(id))?.turns?.count === 2);
  });

  it('is told a multi-line message over SSH as one message (tellAgent, as `/thopter tell` does)', async () => {
    const text = 'Two lines from the issue:\n  keep $(this) and `that` as written';
    model.push({ text: 'Told, on Fly.' });
    assert.equal(await tellAgent(hub, id, { key: 'fly-test-1', text, from: 'alice' }), 'told');
    await waitFor('the answer reported by the observer', async () =>
      /Told, on Fly\./.test((await session())?.screen ?? ''),
    );
    const said = model.userTexts().filter((t) => t.includes('Two lines from the issue'));
    assert.equal(said.length, 1, JSON.stringify(said));
    // Claude Code shows a long paste as pasted content, a short one as typed: the text either way.
    const unwrapped =
      /^\s*<pasted_content[^>]*>\n([\s\S]*)\n<\/pasted_content/.exec(said[0]!)?.[1] ?? said[0];
    assert.equal(unwrapped, text);
    const told = (await hub.store.get(id))!.told!;
    assert.deepEqual(
      told.map((m) => m.state),
      ['delivered'],
    );
  });

  it('is destroyed with its machine', async () => {
    assert.equal((await api(hub.url, 'DELETE', `/api/thopters/${id}`)).status, 202);
    await waitFor('its machine to be deleted', () => live(id).length === 0);
    await waitFor(
      'the thopter to be destroyed',
      async () => (await hub.store.get(id))?.state === 'destroyed',
    );
    const res = await fetch(`${hub.url}/thopters/${id}/log?fragment=1`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    const page = await res.text();
    assert.match(page, /Four, from Fly\./, 'the transcript was copied off the machine before it went');
  });
});
