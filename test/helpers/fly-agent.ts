import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { DEFAULT_AGENT_COMMAND } from '../../src/config.js';
import type { Hub } from '../../src/hub.js';
import { startFakeFly, type FakeFly, type FlyMachine } from '../fakes/fly.js';
import { startFakeGitHub, type FakeGitHub } from '../fakes/github.js';
import { CLAUDE_BIN_DIR, claudeEnvFile, TEST_API_KEY } from './claude.js';
import { api, freePort, type TestWorld } from './env.js';
import { GitHttpServer } from './git-http.js';
import { MachineHost } from './machine-host.js';
import { waitFor } from './wait.js';

export const FLY_REPO = 'acme/widget';
const ISSUES_PAT = 'ghp_ISSUES_pat_for_the_hub_0001';
const AGENT_PAT = 'ghp_AGENTCODER_pat_0123456789abcdef';
const FLY_TOKEN = 'fly_test_token_0123456789';

/** What a real-agent test on THOPTER_PROVIDER=fly works with (see startFlyAgentWorld). */
export interface FlyAgentWorld {
  fly: FakeFly;
  host: MachineHost;
  gh: FakeGitHub;
  hub: Hub;
  /** The repository's bare git directory, served over HTTP to the machines. */
  bare: string;
  /** The thopter's machines that are not destroyed. */
  live(thopterId: string): FlyMachine[];
  close(): Promise<void>;
}

/**
 * The real Claude Code on THOPTER_PROVIDER=fly: the machinery of test/fly.test.ts (the fake Machines
 * API, a real sshd and the image's real init per machine, the repository over HTTP wanting the
 * agentCoderPAT), a hub using it with the scripted model at `modelUrl`, and a golden claude
 * `default` made through the API and logged in as a user would (test/helpers/claude.ts says what
 * that leaves; here the folder holding the workspace is the thopter user's home).
 */
export async function startFlyAgentWorld(
  world: TestWorld,
  modelUrl: string,
  env: Record<string, string> = {},
): Promise<FlyAgentWorld> {
  const root = path.join(world.dir, 'git');
  mkdirSync(path.join(root, 'acme'), { recursive: true });
  const bare = path.join(root, 'acme', 'widget.git');
  execFileSync('git', ['clone', '-q', '--bare', world.origin('widget'), bare]);
  const git = await new GitHttpServer(root, AGENT_PAT).start();

  const gh = await startFakeGitHub();
  gh.addToken(ISSUES_PAT, 'thopter-hub');
  gh.addRepo(FLY_REPO, { cloneUrl: `${git.url}/acme/widget.git` });
  gh.setPermission(FLY_REPO, 'thopter-hub', 'write');

  const sshPort = await freePort();
  const host = new MachineHost({ port: sshPort, baseDir: path.join(world.dir, 'machines') });
  const fly = await startFakeFly({
    tokens: [FLY_TOKEN],
    bootMs: 300,
    onStart: (m) => host.boot(m),
    onStop: (m) => host.stop(m.id),
  });

  // The machines share the host's network and file system (but for their own /data, /thopter and
  // /tmp): they reach the scripted API on loopback and the pinned Claude Code where npm put it.
  const envFile = claudeEnvFile(path.join(world.dir, 'fixtures'), modelUrl);
  execFileSync('bash', [
    '-c',
    `echo "PATH=${CLAUDE_BIN_DIR}:/usr/local/bin:/usr/bin:/bin" >> "$1"`,
    'bash',
    envFile,
  ]);
  const hub = await world.hub({
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
      repositories: { [FLY_REPO]: { issuesPAT: ISSUES_PAT, agentCoderPAT: AGENT_PAT } },
    }),
    ...env,
  });

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

  return {
    fly,
    host,
    gh,
    hub,
    bare,
    live: (thopterId) =>
      fly.machines().filter((m) => m.config.metadata?.thopter_id === thopterId && m.state !== 'destroyed'),
    async close() {
      await world.closeHubs();
      await fly.close();
      await host.stopAll();
      await git.close();
      await gh.close();
    },
  };
}
