import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Hub } from '../src/hub.js';
import { api, TestWorld, writeFixture } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

const world = new TestWorld();
let hub: Hub;
let origin: string;

const machineDir = (id: string) => path.join(world.dir, 'data', 'thopters', id);
const stateOf = async (id: string) => (await api(hub.url, 'GET', `/api/thopters/${id}`)).body;
const until = (id: string, states: string[], timeoutMs = 60_000) =>
  waitFor(
    `thopter ${id} to be ${states.join(' or ')}`,
    async () => {
      const t = await stateOf(id);
      return states.includes(t.state) ? t : undefined;
    },
    { timeoutMs },
  );

before(async () => {
  await world.start();
  origin = world.origin();
  const fixtures = path.join(world.dir, 'fixtures');
  writeFixture(fixtures, 'env.thopters', 'THOPTER_TEST_GREETING="hello from env.thopters"\n');
  writeFixture(
    fixtures,
    'post-checkout.sh',
    '#!/usr/bin/env bash\nset -eu\necho "post-checkout in $PWD with $THOPTER_TEST_GREETING" > ../post-checkout.out\n',
    0o755,
  );
  hub = await world.hub({
    THOPTER_ENV_FILE: path.join(fixtures, 'env.thopters'),
    THOPTER_POST_CHECKOUT_SCRIPT: path.join(fixtures, 'post-checkout.sh'),
  });
});
after(() => world.close());

describe('a scripted launch on the local provider', () => {
  let id: string;
  let thopter: any;

  it('is accepted with 202, an id and a place in line', async () => {
    const res = await api(hub.url, 'POST', '/api/thopters', {
      repository: origin,
      issueNumber: 42,
      title: 'Add a greeting',
      body: 'Please add a greeting. $(touch /tmp/thopter-pwned) `touch /tmp/thopter-pwned` ; rm -rf ~',
      comments: [{ author: 'octocat', body: 'and make it friendly', createdAt: '2026-11-01T10:00:00Z' }],
      url: 'https://github.com/acme/project/issues/42',
    });
    assert.equal(res.status, 202);
    assert.match(res.body.id, /^thopter-[a-f0-9]{12}$/);
    assert.ok(['queued', 'provisioning', 'running'].includes(res.body.state));
    assert.ok('queuePosition' in res.body);
    id = res.body.id;
  });

  it('goes through every phase to running, with timings on its record', async () => {
    thopter = await until(id, ['running', 'failed']);
    assert.equal(thopter.state, 'running', JSON.stringify(thopter.phases));
    const outcomes = Object.fromEntries(thopter.phases.map((p: any) => [p.name, p.outcome]));
    assert.deepEqual(outcomes, {
      'create-machine': 'succeeded',
      'wait-ready': 'succeeded',
      'copy-golden': 'warning', // there is no golden claude in this world
      'clone-repo': 'succeeded',
      'write-context': 'succeeded',
      'post-checkout': 'succeeded',
      'launch-agent': 'succeeded',
    });
    for (const p of thopter.phases) assert.ok(p.durationMs >= 0, `${p.name} has a duration`);
    assert.match(thopter.workBranch, /^thopter\/42--[a-f0-9]{8}$/);
  });

  it('runs the agent, which pushes its work branch to origin', async () => {
    await waitFor('the work branch on origin', () => world.branches(origin).includes(thopter.workBranch));
  });

  it('writes issue.md, issue.json and prompt.md as the seed describes', () => {
    const ws = path.join(machineDir(thopter.machine.id), 'home', 'workspace');
    const issueMd = readFileSync(path.join(ws, 'issue.md'), 'utf8');
    assert.match(issueMd, /\*\*Title:\*\* Add a greeting/);
    assert.match(issueMd, /and make it friendly/);
    const issueJson = JSON.parse(readFileSync(path.join(ws, 'issue.json'), 'utf8'));
    assert.equal(issueJson.workBranch, thopter.workBranch);
    assert.equal(issueJson.github.issueNumber, '42');
    assert.equal(issueJson.github.comments[0].author, 'octocat');
    const prompt = readFileSync(path.join(ws, 'prompt.md'), 'utf8');
    assert.ok(prompt.includes(thopter.workBranch) && prompt.includes('#42') && prompt.includes('./project'));
    assert.ok(!prompt.includes('{{'), 'every variable is filled in');
  });

  it('never lets a shell interpret the issue text', () => {
    assert.equal(existsSync('/tmp/thopter-pwned'), false);
  });

  it('honours .env.thopters and post-checkout.sh', () => {
    const ws = path.join(machineDir(thopter.machine.id), 'home', 'workspace');
    assert.equal(statSync(path.join(ws, '.env.thopters')).mode & 0o777, 0o600);
    const out = readFileSync(path.join(ws, 'post-checkout.out'), 'utf8');
    assert.match(out, /post-checkout in .*\/workspace\/project with hello from env\.thopters/);
  });

  it('reports the live session: the agent process running, the screen', async () => {
    // The hub refreshes the session every THOPTER_STATUS_INTERVAL: wait for the agent's output.
    const t = await waitFor('the agent on the screen', async () => {
      const session = (await stateOf(id)).session;
      return session && /agent: pushed thopter\/42--/.test(session.screen) ? session : undefined;
    });
    assert.equal(t.agentRunning, true);
    assert.equal(t.state, 'active');
  });

  it('keeps its record across a hub restart', async () => {
    await world.stopHub(hub);
    hub = await world.hub();
    const t = await stateOf(id);
    assert.equal(t.state, 'running');
    assert.equal(t.workBranch, thopter.workBranch);
    await waitFor('the new hub to resume it', async () =>
      (await stateOf(id)).events.some((e: any) => e.type === 'resumed'),
    );
  });

  it('is destroyed through the API: the session ends and the workspace is gone', async () => {
    const res = await api(hub.url, 'DELETE', `/api/thopters/${id}`);
    assert.equal(res.status, 202);
    const t = await until(id, ['destroyed']);
    assert.equal(t.endReason, 'destroyed through the API');
    assert.equal(existsSync(machineDir(thopter.machine.id)), false);
  });
});

describe('when a phase fails', () => {
  it('a required phase that keeps failing destroys the machine and leaves the error on the record', async () => {
    const notARepo = path.join(world.dir, 'not-a-repo');
    writeFixture(notARepo, 'file.txt', 'no git here');
    const res = await api(hub.url, 'POST', '/api/thopters', { repository: notARepo, title: 'Doomed' });
    assert.equal(res.status, 202);
    const t = await until(res.body.id, ['failed', 'running'], 90_000);
    assert.equal(t.state, 'failed');
    assert.match(t.endReason, /^clone-repo failed: git clone failed/);
    const clone = t.phases.find((p: any) => p.name === 'clone-repo');
    assert.equal(clone.outcome, 'failed');
    assert.equal(clone.attempts, 3);
    assert.equal(existsSync(machineDir(t.machine.id)), false, 'the machine was destroyed');
  });
});
