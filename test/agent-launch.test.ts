import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Hub } from '../src/hub.js';
import { startFakeGitHub, type FakeGitHub } from './fakes/github.js';
import { api, TestWorld, TOKEN } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

const world = new TestWorld();
const REPO = 'acme/widget';
const ISSUES_TOKEN = 'ghp_issues_token_for_the_hub';
let gh: FakeGitHub;
let origin: string;

before(async () => {
  await world.start();
  origin = world.origin('widget');
  gh = await startFakeGitHub();
  gh.addToken(ISSUES_TOKEN, 'thopter-hub');
  gh.addRepo(REPO, { cloneUrl: origin });
  gh.setPermission(REPO, 'thopter-hub', 'write');
  gh.setPermission(REPO, 'alice', 'write');
});
after(async () => {
  await gh?.close();
  await world.close();
});

const stateOf = async (hub: Hub, id: string) => (await api(hub.url, 'GET', `/api/thopters/${id}`)).body;
const ended = (hub: Hub, id: string) =>
  waitFor(
    `thopter ${id} to end`,
    async () => {
      const t = await stateOf(hub, id);
      return ['failed', 'destroyed', 'running'].includes(t.state) ? t : undefined;
    },
    { timeoutMs: 90_000 },
  );

describe('an agent command that is not installed', () => {
  let hub: Hub;
  const logs: string[] = [];
  before(async () => {
    hub = await world.hub(
      {
        MAX_THOPTERS: '1',
        THOPTER_AGENT_COMMAND: 'no-such-agent-h7 --dangerously-skip-permissions "read ./prompt.md"',
        GITHUB_API_URL: gh.url,
        GITHUB_INTEGRATION_JSON: JSON.stringify({ repositories: { [REPO]: { issuesPAT: ISSUES_TOKEN } } }),
        GITHUB_ISSUES_POLLING_INTERVAL: '1',
        HUB_PUBLIC_URL: 'https://hub.example.test',
      },
      logs,
    );
  });
  after(() => world.stopHub(hub));

  it('is named in a warning when the hub starts', () => {
    const warning = logs.find((l) => l.includes('not on PATH'));
    assert.ok(warning, 'the hub warned');
    assert.match(warning, /"no-such-agent-h7"/);
    assert.match(warning, /Install Claude Code/);
  });

  it("fails launch-agent with the terminal's last lines, in the status comment and the dashboard, and frees the slot", async () => {
    const issue = gh.addIssue(REPO, { title: 'Add a greeting', body: 'Please.', user: 'alice' });
    gh.addComment(REPO, issue.number, { user: 'alice', body: '/thopter' });
    const [thopter] = await waitFor('the thopter to be accepted', async () => {
      const all = (await hub.store.list()).filter((t) => t.request.issue.number === issue.number);
      return all.length ? all : undefined;
    });
    const t = await ended(hub, thopter!.id);
    assert.equal(t.state, 'failed');
    assert.match(
      t.endReason,
      /^launch-agent failed: the agent was not running .*no-such-agent-h7: command not found/,
    );
    assert.match(t.endReason, /check that THOPTER_AGENT_COMMAND/);
    const launch = t.phases.find((p: any) => p.name === 'launch-agent');
    assert.equal(launch.outcome, 'failed');
    assert.equal(launch.attempts, 1, 'typing it again cannot install it: no retry');
    assert.equal(
      existsSync(path.join(world.dir, 'data', 'thopters', t.machine.id)),
      false,
      'machine destroyed',
    );

    await waitFor('the status comment to say why it failed', () =>
      gh
        .comments(REPO, issue.number)
        .some((c) =>
          /\*\*failed\*\*: launch-agent failed: .*`[^`]*no-such-agent-h7: command not found[^`]*`/.test(
            c.body ?? '',
          ),
        ),
    );
    const page = await fetch(`${hub.url}/thopters/${t.id}`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assert.match(await page.text(), /no-such-agent-h7: command not found/);

    // MAX_THOPTERS is 1: another request gets going only because the slot was freed.
    const next = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title: 'Next one' });
    assert.equal(next.status, 202);
    await waitFor(
      'the next thopter to leave the queue',
      async () => (await stateOf(hub, next.body.id)).state !== 'queued',
    );
    await ended(hub, next.body.id);
  });
});

describe('an agent that exits right after it starts', () => {
  let hub: Hub;
  const logs: string[] = [];
  before(async () => {
    // Alive for 4 s, well past a few of launch-agent's 250 ms looks, and gone before it settles.
    hub = await world.hub({ THOPTER_AGENT_COMMAND: 'sleep 4', THOPTER_AGENT_SETTLE: '10s' }, logs);
  });
  after(() => world.stopHub(hub));

  it('draws no warning at start: its program is on PATH', () => {
    assert.equal(logs.filter((l) => l.includes('not on PATH')).length, 0);
  });

  it('fails launch-agent rather than reporting a running thopter', async () => {
    const res = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title: 'Short-lived' });
    assert.equal(res.status, 202);
    const t = await ended(hub, res.body.id);
    assert.equal(t.state, 'failed');
    assert.match(
      t.endReason,
      /^launch-agent failed: the agent exited right after it started \(its terminal ends with `/,
    );
  });
});
