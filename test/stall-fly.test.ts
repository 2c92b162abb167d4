import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Hub } from '../src/hub.js';
import { buildObserver } from '../thopter/observer/build.js';
import { FakeAnthropic } from './fakes/anthropic.js';
import type { FakeGitHub } from './fakes/github.js';
import { TEST_API_KEY } from './helpers/claude.js';
import { api, TestWorld } from './helpers/env.js';
import { FLY_REPO, startFlyAgentWorld, type FlyAgentWorld } from './helpers/fly-agent.js';
import { MachineHost } from './helpers/machine-host.js';
import { waitFor } from './helpers/wait.js';

/**
 * A stall on THOPTER_PROVIDER=fly, with the machinery of test/agent-fly.test.ts (the fake Machines
 * API, a real sshd and the image's real init per machine, the real Claude Code as the thopter user,
 * the real observer bundle posting its screen): the hub judges the observer's screen and reads the
 * transcript over SSH.
 */

const world = new TestWorld();
const REPO = FLY_REPO;

let host: MachineHost;
let gh: FakeGitHub;
let model: FakeAnthropic;
let hub: Hub;
let live: FlyAgentWorld['live'];
let flyWorld: FlyAgentWorld | undefined;
let releaseAnswer!: () => void;
const answerHeld = new Promise<void>((resolve) => (releaseAnswer = resolve));

before(async () => {
  await world.start();
  model = await new FakeAnthropic({
    apiKey: TEST_API_KEY,
    // The model never answers, until the test lets it: a hung API request.
    script: [{ text: 'Sorry, I was slow.', after: answerHeld }],
  }).start();
  flyWorld = await startFlyAgentWorld(world, model.url, { THOPTER_STALL_AFTER: '5s' });
  ({ host, gh, hub, live } = flyWorld);
});

after(async () => {
  releaseAnswer();
  await flyWorld?.close();
  await model?.close();
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
