import path from 'node:path';
import { DEFAULT_AGENT_COMMAND } from '../../src/config.js';
import type { Hub } from '../../src/hub.js';
import { FakeAnthropic, type ScriptedStep } from '../fakes/anthropic.js';
import { startFakeGitHub, type FakeGitHub } from '../fakes/github.js';
import { CLAUDE_BIN_DIR, claudeEnvFile, makeGoldenClaude, TEST_API_KEY } from './claude.js';
import type { TestWorld } from './env.js';

/** The hub's token for the issues (user `thopter-hub`, write access). */
export const ISSUES_TOKEN = 'ghp_issues_token_for_the_hub';
/** The agent's agentCoderPAT (user `thopter-coder`, write access), when the test gives it one. */
export const CODER_TOKEN = 'ghp_coder_token_for_the_agent';

/** What a real-agent test driven from GitHub issues works with (see startIssueAgentWorld). */
export interface IssueAgentWorld {
  gh: FakeGitHub;
  model: FakeAnthropic;
  /** The first hub. */
  hub: Hub;
  hubs: Hub[];
  /** The bare repository every repository of the test clones (a folder of the test world). */
  origin: string;
  /** The hubs' environment: another hub started with it is one more like them. */
  env: Record<string, string>;
}

export interface IssueAgentOptions {
  /** The model's turns (FakeAnthropic). */
  script: ScriptedStep[];
  /**
   * The repositories the hub watches (all cloned from one origin named after the first), each with
   * its settings besides the tokens, e.g. `dailyBudgetUsd`.
   */
  repositories: Record<string, Record<string, unknown>>;
  /** Whether the agent pushes with the agentCoderPAT (CODER_TOKEN); without it, it has none. */
  coder?: boolean;
  /** Who may write to the repositories, besides the hub (and the coder); default alice. */
  writers?: string[];
  /** Who may only read them. */
  readers?: string[];
  /** More of the hubs' environment (or what replaces the defaults). */
  env?: Record<string, string>;
  /** How many hubs on the one Redis; default 1. */
  hubs?: number;
  /** Where the hubs' log lines go (TestWorld.hub). */
  logs?: string[];
}

/**
 * The real Claude Code on the local provider, launched from issues: a fake GitHub with the
 * repositories, the scripted model, hubs polling every second with the real agent command, and a
 * golden claude `default` made through the API and logged in as a user would
 * (test/helpers/claude.ts says what that leaves).
 */
export async function startIssueAgentWorld(
  world: TestWorld,
  opts: IssueAgentOptions,
): Promise<IssueAgentWorld> {
  // The real Claude Code, as the hub's machines find it: on the PATH they inherit.
  if (!(process.env.PATH ?? '').split(':').includes(CLAUDE_BIN_DIR)) {
    process.env.PATH = `${CLAUDE_BIN_DIR}:${process.env.PATH ?? '/usr/bin:/bin'}`;
  }
  const repos = Object.keys(opts.repositories);
  const origin = world.origin(repos[0]!.split('/')[1]);
  const gh = await startFakeGitHub();
  gh.addToken(ISSUES_TOKEN, 'thopter-hub');
  if (opts.coder) gh.addToken(CODER_TOKEN, 'thopter-coder');
  const writers = ['thopter-hub', ...(opts.coder ? ['thopter-coder'] : []), ...(opts.writers ?? ['alice'])];
  for (const repo of repos) {
    gh.addRepo(repo, { cloneUrl: origin });
    for (const login of writers) gh.setPermission(repo, login, 'write');
    for (const login of opts.readers ?? []) gh.setPermission(repo, login, 'read');
  }
  const model = await new FakeAnthropic({ apiKey: TEST_API_KEY, script: opts.script }).start();
  const tokens = { issuesPAT: ISSUES_TOKEN, ...(opts.coder ? { agentCoderPAT: CODER_TOKEN } : {}) };
  const env = {
    THOPTER_AGENT_COMMAND: DEFAULT_AGENT_COMMAND,
    THOPTER_ENV_FILE: claudeEnvFile(path.join(world.dir, 'fixtures'), model.url),
    GITHUB_API_URL: gh.url,
    GITHUB_INTEGRATION_JSON: JSON.stringify({
      repositories: Object.fromEntries(
        Object.entries(opts.repositories).map(([repo, settings]) => [repo, { ...tokens, ...settings }]),
      ),
    }),
    GITHUB_ISSUES_POLLING_INTERVAL: '1',
    HUB_PUBLIC_URL: 'https://hub.example.test',
    ...opts.env,
  };
  const hubs: Hub[] = [];
  for (let i = 0; i < (opts.hubs ?? 1); i++) hubs.push(await world.hub(env, opts.logs));
  await makeGoldenClaude(hubs[0]!.url, 'default', { trusted: path.join(world.dir, 'data', 'thopters') });
  return { gh, model, hub: hubs[0]!, hubs, origin, env };
}
