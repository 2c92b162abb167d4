import assert from 'node:assert/strict';
import { it } from 'node:test';
import { loadConfig, PROJECT_DIR } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { PHASE_BY_NAME, PHASES, type PhaseContext } from '../../src/processors/phases/index.js';
import { Prompts } from '../../src/prompts.js';
import type { ExecResult, Interactive, Provider, Transport } from '../../src/providers/types.js';
import type { ThopterStore } from '../../src/thopters/store.js';
import { aThopter } from '../helpers/records.js';
import path from 'node:path';

/** A transport that only records what a phase asked of it. */
class RecordingTransport implements Transport {
  readonly paths = {
    home: '/data/thopter',
    workspace: '/data/thopter/workspace',
    log: '/thopter/log',
    ready: '/thopter/ready',
  };
  readonly isOpen = true;
  files = new Map<string, string>();
  modes = new Map<string, number>();
  commands: string[][] = [];
  async exec(argv: string[]): Promise<ExecResult> {
    this.commands.push(argv);
    return { exitCode: 0, stdout: '', stderr: '' };
  }
  async writeFile(p: string, data: string | Buffer, mode = 0o644) {
    this.files.set(p, String(data));
    this.modes.set(p, mode);
  }
  async appendFile(p: string, data: string) {
    this.files.set(p, (this.files.get(p) ?? '') + data);
  }
  async exists(p: string) {
    return this.files.has(p);
  }
  async readFile(p: string) {
    return Buffer.from(this.files.get(p) ?? '');
  }
  async open(): Promise<Interactive> {
    throw new Error('no phase opens an interactive command');
  }
  async close() {}
}

const EVIL = 'Fix it $(touch /tmp/pwned) `id` ; rm -rf /';
const AT = '2026-01-01T00:00:00Z';
const thopter = aThopter(
  'provisioning',
  {
    machine: {
      id: 'ab12cd34',
      provider: 'local',
      workBranch: 'thopter/42--ab12cd34',
      state: 'created',
      createdAt: AT,
    },
    createdAt: AT,
    updatedAt: AT,
  },
  {
    issue: {
      number: 42,
      title: EVIL,
      body: EVIL,
      author: 'octocat',
      comments: [{ author: 'x', body: EVIL, createdAt: AT }],
    },
    priority: 100,
    requestedBy: 'octocat',
    createdAt: AT,
  },
);

function context(t: RecordingTransport, env: Record<string, string> = {}): PhaseContext {
  return {
    thopter,
    config: loadConfig({ THOPTER_AGENT_SETTLE: '10ms', ...env }),
    provider: {
      name: 'local',
      snapshot: async () => ({ screen: '', agentRunning: true, sessionAlive: true }),
    } as unknown as Provider,
    store: {} as ThopterStore,
    prompts: new Prompts(path.join(PROJECT_DIR, 'prompts')),
    log: createLogger('silent'),
    signal: new AbortController().signal,
    firstRun: true,
    transport: async () => t,
    machineLog: async () => {},
  };
}

it('lists the seven phases in the order the seed runs them, two of them optional', () => {
  assert.deepEqual(
    PHASES.map((p) => `${p.name}${p.optional ? '*' : ''}`),
    [
      'create-machine',
      'wait-ready',
      'copy-golden*',
      'clone-repo',
      'write-context',
      'post-checkout*',
      'launch-agent',
    ],
  );
});

it("write-context writes the three files, with issue text only inside them, and the agent's settings", async () => {
  const t = new RecordingTransport();
  await PHASE_BY_NAME['write-context'].run(context(t));
  assert.deepEqual([...t.files.keys()].sort(), [
    '/data/thopter/.thopter/agent-settings.json',
    '/data/thopter/workspace/issue.json',
    '/data/thopter/workspace/issue.md',
    '/data/thopter/workspace/prompt.md',
  ]);
  assert.ok(t.files.get('/data/thopter/workspace/issue.md')!.includes(EVIL));
  assert.equal(JSON.parse(t.files.get('/data/thopter/workspace/issue.json')!).github.issueTitle, EVIL);
  assert.deepEqual(t.commands, [], 'no command ran');
  const settings = JSON.parse(t.files.get('/data/thopter/.thopter/agent-settings.json')!);
  assert.deepEqual(
    Object.keys(settings),
    ['hooks'],
    "only the hook: the golden claude's settings stay in force",
  );
});

it('launch-agent and clone-repo never put issue text on a command line', async () => {
  const t = new RecordingTransport();
  await PHASE_BY_NAME['clone-repo'].run(context(t));
  await PHASE_BY_NAME['launch-agent'].run(context(t));
  assert.ok(t.commands.some((c) => c.includes('clone')));
  assert.ok(t.commands.some((c) => c[0] === 'tmux' && c.includes('send-keys')));
  for (const argv of t.commands) assert.ok(!argv.join(' ').includes('pwned'), argv.join(' '));
});

it('clone-repo hands the token to git through a helper reading a file, never an argument', async () => {
  const t = new RecordingTransport();
  const token = 'ghp_AGENTCODER0123456789';
  const integration = JSON.stringify({
    repositories: { 'acme/widget': { agentCoderPAT: token, userName: 'Bot', userEmail: 'bot@example.com' } },
  });
  await PHASE_BY_NAME['clone-repo'].run(context(t, { GITHUB_INTEGRATION_JSON: integration }));
  assert.equal(t.files.get('/data/thopter/.thopter/git-token'), token + '\n');
  assert.equal(t.modes.get('/data/thopter/.thopter/git-token'), 0o600, 'only its owner can read it');
  assert.equal(t.modes.get('/data/thopter/.thopter/git-credential'), 0o700);
  assert.ok(!t.files.get('/data/thopter/.thopter/git-credential')!.includes(token));
  const clone = t.commands.find((c) => c.includes('clone'))!;
  assert.ok(clone.includes('credential.helper='), 'helpers from ~/.gitconfig are dropped first');
  assert.ok(clone.includes('credential.helper=!/data/thopter/.thopter/git-credential'));
  assert.ok(clone.includes('user.name=Bot'));
  assert.ok(clone.includes('https://github.com/acme/widget.git'), 'the URL carries no token');
  for (const argv of t.commands) assert.ok(!argv.join(' ').includes(token), argv.join(' '));
});
