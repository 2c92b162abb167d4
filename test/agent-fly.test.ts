import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Hub } from '../src/hub.js';
import { tellAgent } from '../src/processors/tell.js';
import { agentWaits } from '../src/scanner/continue.js';
import { buildObserver } from '../thopter/observer/build.js';
import { bash, FakeAnthropic, userTexts } from './fakes/anthropic.js';
import type { FlyMachine } from './fakes/fly.js';
import type { FakeGitHub } from './fakes/github.js';
import { TEST_API_KEY } from './helpers/claude.js';
import { api, TestWorld, TOKEN } from './helpers/env.js';
import { FLY_REPO, startFlyAgentWorld, type FlyAgentWorld } from './helpers/fly-agent.js';
import { MachineHost } from './helpers/machine-host.js';
import { waitFor } from './helpers/wait.js';

/**
 * The real Claude Code on THOPTER_PROVIDER=fly: the machinery of test/fly.test.ts (the fake
 * Machines API, a real sshd and the image's real init per machine, the repository over HTTP wanting
 * the agentCoderPAT), the agent as the unprivileged thopter user in the session init opened, and
 * the real observer bundle posting what it sees (pm2, which would start it, is not installed here).
 */

const world = new TestWorld();
const REPO = FLY_REPO;

let host: MachineHost;
let gh: FakeGitHub;
let model: FakeAnthropic;
let hub: Hub;
let bare: string;
let live: FlyAgentWorld['live'];
let flyWorld: FlyAgentWorld | undefined;
let releaseAnswer!: () => void;
const answerHeld = new Promise<void>((resolve) => (releaseAnswer = resolve));

before(async () => {
  await world.start();
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
  flyWorld = await startFlyAgentWorld(world, model.url);
  ({ host, gh, hub, bare, live } = flyWorld);
});

after(async () => {
  releaseAnswer();
  await flyWorld?.close();
  await model?.close();
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
    // Its UserPromptSubmit hook marked the prompt taken before that end: the agent waits for input.
    const t = (await hub.store.get(id))!;
    const started = t.session?.turns?.lastStartedAt;
    assert.ok(
      started && Date.parse(started) <= Date.parse(turns.lastEndedAt!),
      JSON.stringify(t.session?.turns),
    );
    assert.equal(agentWaits(t), true);
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
    // Marked once the paste over SSH returned, which may come after the agent answered.
    await waitFor('the message marked delivered', async () => {
      const told = (await hub.store.get(id))!.told!;
      return told.length === 1 && told[0]!.state === 'delivered';
    });
    // Its prompt hook's mark was read over SSH: taken at once, so no word of a second Enter.
    const events = (await hub.store.events(id)).map((e) => e.type);
    assert.ok(events.includes('tell-delivered') && !events.includes('tell-enter'), events.join(', '));
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
