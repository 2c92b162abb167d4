import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DEFAULT_AGENT_COMMAND } from '../src/config.js';
import type { Hub } from '../src/hub.js';
import { bash, FakeAnthropic, userTexts } from './fakes/anthropic.js';
import { CLAUDE_BIN_DIR, claudeEnvFile, makeGoldenClaude, TEST_API_KEY } from './helpers/claude.js';
import { api, TestWorld, TOKEN } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

// The real Claude Code, as the hub's machines find it: on the PATH they inherit.
process.env.PATH = `${CLAUDE_BIN_DIR}:${process.env.PATH ?? '/usr/bin:/bin'}`;

const world = new TestWorld();
let hub: Hub;
let origin: string;
let model: FakeAnthropic;
let releaseAnswer!: () => void;
const answerHeld = new Promise<void>((resolve) => (releaseAnswer = resolve));

const dataDir = () => path.join(world.dir, 'data');
const stateOf = async (id: string) => (await api(hub.url, 'GET', `/api/thopters/${id}`)).body;
const tmux = (machineId: string, args: string[]) =>
  execFileSync('tmux', args, {
    env: { ...process.env, TMUX_TMPDIR: path.join(dataDir(), 'thopters', machineId, 'tmux') },
    encoding: 'utf8',
  });

before(async () => {
  await world.start();
  origin = world.origin();
  model = await new FakeAnthropic({
    apiKey: TEST_API_KEY,
    script: [
      { text: 'I will read my instructions.', tools: [bash('cat prompt.md', 'Read the instructions')] },
      // The model finds its work branch where a real one would: in prompt.md, as its tool read it.
      (req) => {
        const branch = /thopter\/\d+--[a-f0-9]+/.exec(userTexts(req).join('\n'))?.[0];
        if (!branch) return { text: 'prompt.md names no work branch.' };
        return {
          tools: [
            bash(
              `cd project && echo 'Hello from the agent' > GREETING.md && git add GREETING.md && git commit -qm 'Add a greeting' && git push -q origin ${branch}`,
              'Commit and push the greeting',
            ),
          ],
        };
      },
      { text: 'Pushed the greeting to the work branch.', after: answerHeld },
    ],
  }).start();
  hub = await world.hub({
    THOPTER_AGENT_COMMAND: DEFAULT_AGENT_COMMAND,
    THOPTER_ENV_FILE: claudeEnvFile(path.join(world.dir, 'fixtures'), model.url),
    THOPTER_IDLE_AFTER: '3s',
  });
  await makeGoldenClaude(hub.url, 'default', { trusted: path.join(dataDir(), 'thopters') });
});
after(async () => {
  releaseAnswer();
  // The scripted API first: it was opened after the world took its count of open handles.
  await model.close();
  await world.close();
});

describe('the real Claude Code on the local provider', () => {
  let id: string;
  let thopter: any;

  it('provisions with the golden claude copied and the default agent command', async () => {
    const res = await api(hub.url, 'POST', '/api/thopters', {
      repository: origin,
      issueNumber: 7,
      title: 'Add a greeting',
      body: 'Please add GREETING.md.',
      gc: 'default',
    });
    assert.equal(res.status, 202);
    id = res.body.id;
    thopter = await waitFor('the thopter to run', async () => {
      const t = await stateOf(id);
      return ['running', 'failed'].includes(t.state) ? t : undefined;
    });
    assert.equal(thopter.state, 'running', JSON.stringify(thopter.phases));
    const copy = thopter.phases.find((p: any) => p.name === 'copy-golden');
    assert.equal(copy.outcome, 'succeeded');
  });

  it('reads prompt.md, then commits on the work branch and pushes it through its Bash tool', async () => {
    await waitFor('the work branch on origin', () => world.branches(origin).includes(thopter.workBranch), {
      timeoutMs: 120_000,
    });
    const pushed = execFileSync('git', ['-C', origin, 'show', `${thopter.workBranch}:GREETING.md`], {
      encoding: 'utf8',
    });
    assert.equal(pushed, 'Hello from the agent\n');
    const first = model.requests.find((r) => r.step === 1);
    assert.ok(first, 'the model was asked again after reading prompt.md');
    assert.ok(
      userTexts(first.body).some((t) => t.includes(thopter.workBranch)),
      'prompt.md reached the model',
    );
  });

  it('is seen running while the model works on its answer', async () => {
    await waitFor('the model to be asked for its last answer', () => model.stepsTaken >= 3);
    const session = await waitFor('the session with the agent running', async () => {
      const s = (await stateOf(id)).session;
      return s?.agentRunning && s.state === 'active' ? s : undefined;
    });
    assert.doesNotMatch(session.screen, /Pushed the greeting/);
  });

  it('is seen waiting at its prompt once its turn has ended', async () => {
    releaseAnswer();
    const session = await waitFor(
      'the session to be idle at the prompt',
      async () => {
        const s = (await stateOf(id)).session;
        return s?.state === 'idle' && /Pushed the greeting to the work branch/.test(s.screen) ? s : undefined;
      },
      { timeoutMs: 90_000 },
    );
    assert.equal(session.agentRunning, true, 'Claude Code waits at its prompt: the process stays');
    assert.match(session.screen, /❯/);
  });

  it("records the end of its turn, told by Claude Code's Stop hook, once", async () => {
    const t = await waitFor('the turn to be recorded', async () => {
      const t = await api(hub.url, 'GET', `/api/thopters/${id}`);
      return t.body.turns?.count >= 1 ? t.body : undefined;
    });
    assert.equal(t.turns.count, 1, 'one turn: the model asked for tools twice, then answered');
    const ended = t.events.filter((e: any) => e.type === 'turn-ended');
    assert.equal(ended.length, 1);
    assert.match(ended[0].message, /ended its turn 1 and waits for input/);
    // The hub's settings came beside the golden claude's: the hook ran, and no first-run prompt
    // (which the golden claude's own settings answer) held the agent.
    const home = path.join(dataDir(), 'thopters', thopter.machine.id, 'home');
    const lines = readFileSync(path.join(home, '.thopter', 'turns.log'), 'utf8');
    // The UserPromptSubmit hook marked the prompt given on the command line, then the Stop hook
    // marked the turn's end.
    assert.match(lines, /^\S+Z\tprompt\n\S+Z\t\{.*"hook_event_name":"Stop".*\}\n$/);
    assert.ok(
      JSON.parse(readFileSync(path.join(home, '.claude', 'settings.json'), 'utf8'))
        .skipDangerousModePermissionPrompt,
      "the golden claude's settings are untouched",
    );
  });

  it("renders the real transcript in the dashboard's session log", async () => {
    const res = await fetch(`${hub.url}/thopters/${id}/log?fragment=1`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assert.equal(res.status, 200);
    const page = await res.text();
    assert.match(page, /read \.\/prompt\.md for your instructions/);
    assert.match(page, /cat prompt\.md/);
    assert.match(page, /git push -q origin thopter\/7--/);
    assert.match(page, /Pushed the greeting to the work branch\./);
  });

  it('answers a second message typed into its terminal session', async () => {
    model.push({ text: 'Two and two make four.' });
    tmux(thopter.machine.id, ['send-keys', '-t', 'thopter', '-l', 'what is 2+2?']);
    tmux(thopter.machine.id, ['send-keys', '-t', 'thopter', 'Enter']);
    await waitFor('the answer on the screen', async () =>
      /Two and two make four\./.test((await stateOf(id)).session?.screen ?? ''),
    );
    assert.ok(model.userTexts().includes('what is 2+2?'));
    const t = await waitFor('the second turn to be recorded', async () => {
      const t = (await stateOf(id)).turns;
      return t?.count === 2 ? t : undefined;
    });
    assert.ok(Date.parse(t.lastEndedAt) > 0);
  });

  it('never puts the API key in a process argument or in Redis', async () => {
    const args = execFileSync('ps', ['-e', '-o', 'args='], { encoding: 'utf8' });
    assert.ok(!args.includes(TEST_API_KEY), 'no command line holds the key');
    assert.ok(!(await world.redisText()).includes(TEST_API_KEY), 'no record or job holds the key');
  });

  it('ends the agent with its machine', async () => {
    const machineDir = path.join(dataDir(), 'thopters', thopter.machine.id);
    const pid = Number(tmux(thopter.machine.id, ['display-message', '-p', '-t', 'thopter', '#{pane_pid}']));
    const agent = Number(readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(' ')[0]);
    assert.equal(readFileSync(`/proc/${agent}/comm`, 'utf8').trim(), 'claude');
    assert.equal((await api(hub.url, 'DELETE', `/api/thopters/${id}`)).status, 202);
    await waitFor('the thopter to be destroyed', async () => (await stateOf(id)).state === 'destroyed');
    assert.equal(existsSync(machineDir), false);
    await waitFor('the claude process to end', () => !existsSync(`/proc/${agent}`));
  });

  it('keeps its session log after the machine is gone', async () => {
    const res = await fetch(`${hub.url}/thopters/${id}/log?fragment=1`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    assert.equal(res.status, 200);
    const page = await res.text();
    assert.match(page, /has ended \(destroyed\); its transcript as it stood then/);
    assert.match(page, /Pushed the greeting to the work branch\./);
    assert.match(page, /Two and two make four\./, 'the whole conversation, up to the end');
  });
});
