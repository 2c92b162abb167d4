import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Hub } from '../src/hub.js';
import { randomBytes } from 'node:crypto';
import type { Job } from 'bullmq';
import { createLogger } from '../src/log.js';
import type { ProcessorDeps } from '../src/processors/deps.js';
import { actOnAgentNews } from '../src/processors/finish.js';
import { MAX_TELL_CHARS, tellAgent, tellProcessor } from '../src/processors/tell.js';
import type { Transport } from '../src/providers/types.js';
import type { JobTable } from '../src/queues/jobs.js';
import type { Request } from '../src/thopters/record.js';
import { FakeAnthropic, type MessageRequest } from './fakes/anthropic.js';
import { deliverWebhook, type FakeGitHub } from './fakes/github.js';
import { api, TestWorld, TOKEN } from './helpers/env.js';
import { ISSUES_TOKEN, startIssueAgentWorld } from './helpers/issue-agent.js';
import { aRequest } from './helpers/records.js';
import { waitFor } from './helpers/wait.js';

const world = new TestWorld();
const REPO = 'acme/widget';
const SECRET = 'webhook-secret-for-tell';
let gh: FakeGitHub;
let model: FakeAnthropic;
let hubs: Hub[] = [];
/** Both hubs' logs, for a wait that times out to say why. */
const logs: string[] = [];

/** The thopters of an issue as the hub sees them, and the hubs' last words: for a failed wait. */
async function explain(issue: number): Promise<string> {
  const records = (await hubs[0]!.store.list()).filter(
    (r) => r.request.source === 'github' && r.request.issue.number === issue,
  );
  const lines = [];
  for (const r of records) {
    const { id, state, turns, finish, session, told } = r;
    lines.push(JSON.stringify({ id, state, turns, finish, session, told }));
    lines.push(...(await hubs[0]!.store.events(r.id)).map((e) => `  ${e.at} ${e.type}: ${e.message}`));
  }
  return [...lines, 'last hub log lines:', ...logs.slice(-60).map((l) => l.slice(0, 400))].join('\n');
}

/** What alice tells the agent: several lines, one of them indented, with shell-looking text. */
const TOLD = [
  'Please make the greeting say:',
  '  "hello; $(touch /tmp/pwned) `rm -rf x`"',
  '',
  'and keep it short.',
].join('\n');
/** A long message: 300 lines, some 12 KB. */
const LONG = [
  'Say this once only.',
  ...Array.from({ length: 300 }, (_, i) => `line ${i}: ${'·'.repeat(30)}`),
].join('\n');
const ANSWER = 'I will make the greeting say exactly that.';

/** The user messages of a request, each as the one text the agent's user turn carried. */
function userMessages(req: MessageRequest): string[] {
  return req.messages
    .filter((m) => m.role === 'user')
    .map((m) =>
      typeof m.content === 'string'
        ? m.content
        : m.content
            .filter((b) => b.type === 'text' && typeof b.text === 'string')
            .map((b) => b.text as string)
            .join('\n'),
    );
}

const reports = (issue: number) =>
  gh.comments(REPO, issue).filter((c) => /^<!-- thopter-report:/.test(c.body ?? ''));
const replies = (issue: number) =>
  gh.comments(REPO, issue).filter((c) => /^<!-- thopter-reply:/.test(c.body ?? ''));

before(async () => {
  await world.start();
  // Two hubs on one Redis, both polling every second: a tell is still delivered once.
  ({ gh, model, hubs } = await startIssueAgentWorld(world, {
    repositories: { [REPO]: {} },
    readers: ['bob'],
    script: [
      { text: 'What should the greeting say?' },
      // The model answers what it was told only if the told text arrived whole, as one message.
      (req) => {
        const last = userMessages(req).at(-1) ?? '';
        return { text: last.includes(TOLD) ? ANSWER : `I got something else: ${JSON.stringify(last)}` };
      },
    ],
    env: { GITHUB_WEBHOOK_SECRET: SECRET },
    hubs: 2,
    logs,
  }));
});
after(async () => {
  await model?.close();
  await gh?.close();
  await world.close();
});

describe('/thopter tell', () => {
  let issue: number;
  let id: string;

  it('pastes a multi-line message into the agent as one message, reacts, and the next report answers it', async () => {
    issue = gh.addIssue(REPO, { title: 'A greeting', body: 'Add one.', user: 'alice' }).number;
    gh.addComment(REPO, issue, { user: 'alice', body: '/thopter' });
    const first = await waitFor('the report of the first turn', () => reports(issue)[0], {
      timeoutMs: 180_000,
      explain: () => explain(issue),
    });
    id = /thopter-report:(thopter-[a-f0-9]+):turn-1 -->/.exec(first.body ?? '')?.[1] ?? '';
    assert.ok(id, first.body ?? '');

    const tell = gh.addComment(REPO, issue, { user: 'alice', body: `/thopter tell ${TOLD}` });
    // Seen again by a webhook, on top of both hubs' polls.
    const hook = await deliverWebhook(`${hubs[1]!.url}/github/webhook`, {
      ...gh.issueCommentEvent(REPO, tell.id, 'created'),
      secret: SECRET,
    });
    assert.equal(hook.status, 202);

    const answer = await waitFor(
      'the report that answers the tell',
      () => reports(issue).find((c) => /:turn-2 -->/.test(c.body ?? '')),
      { timeoutMs: 120_000 },
    );
    const body = answer.body ?? '';
    assert.match(body, new RegExp(`It answers @alice's \\[message\\]\\(${escape(tell.html_url)}\\)\\.`));
    assert.match(body, new RegExp(`^> ${escape(ANSWER)}$`, 'm'));

    // The agent got the text once, as one user message holding all of it.
    const carrying = model.requests
      .flatMap((r) => userMessages(r.body))
      .filter((m, i, all) => m.includes('keep it short') && all.indexOf(m) === i);
    assert.deepEqual(carrying, [carrying[0]]);
    // Claude Code shows a long paste as pasted content, a short one as typed: the text either way.
    const pasted =
      /^\s*<pasted_content[^>]*>\n([\s\S]*)\n<\/pasted_content/.exec(carrying[0]!)?.[1] ?? carrying[0];
    assert.equal(pasted, TOLD, JSON.stringify(carrying[0]));
    // The newest conversation the model saw holds it once: it was not pasted a second time.
    const newest = model.lastTurn()!.body;
    assert.equal(userMessages(newest).filter((m) => m.includes('keep it short')).length, 1);

    // Acknowledged with the hub's reaction on the comment, once.
    assert.deepEqual(gh.reactions(REPO, { commentId: tell.id }), [{ login: 'thopter-hub', content: 'eyes' }]);
    const record = (await hubs[0]!.store.get(id))!;
    assert.equal(record.told?.length, 1);
    assert.equal(record.told![0]!.state, 'delivered');
    assert.equal(record.told![0]!.text, TOLD);
    const events = (await hubs[0]!.store.events(id)).map((e) => e.type);
    assert.equal(events.filter((e) => e === 'told').length, 1);
    assert.equal(events.filter((e) => e === 'tell-delivered').length, 1);
    // The agent waited: its prompt hook marked the message as taken (read with grep on the
    // machine), so no second Enter and no event about one.
    assert.equal(events.filter((e) => e === 'tell-enter').length, 0);
    // The API and the dashboard's thopter page show it.
    const shown = await api(hubs[0]!.url, 'GET', `/api/thopters/${id}`);
    assert.deepEqual(
      shown.body.told.map((m: { text: string; state: string; from: string }) => [m.from, m.state, m.text]),
      [['alice', 'delivered', TOLD]],
    );
    const page = await fetch(`${hubs[0]!.url}/thopters/${id}`, {
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    const text = await page.text();
    assert.equal(page.status, 200);
    assert.match(text, /<h2>Told<\/h2>/);
    assert.ok(text.includes('and keep it short.'), 'the told text is on the page');
    assert.ok(!text.includes('"hello; $(touch'), 'escaped as HTML');
    // Nothing was said on the issue but the reports.
    assert.deepEqual(replies(issue), []);
  });

  it('refuses a read-only user’s tell with one reply, and nothing reaches the agent', async () => {
    const before = model.stepsTaken;
    const tell = gh.addComment(REPO, issue, { user: 'bob', body: '/thopter tell delete everything' });
    const refused = await waitFor('the refusal', () => replies(issue)[0], { timeoutMs: 30_000 });
    assert.match(refused.body ?? '', /@bob, thank you for asking, but only people with write access/);
    // A later command on the same issue is answered only after bob's was looked at again by the polls.
    gh.addComment(REPO, issue, { user: 'alice', body: '/thopter tell --id thopter-000000000000 hi' });
    await waitFor('the reply to the wrong id', () => replies(issue).length >= 2, { timeoutMs: 30_000 });
    assert.equal(replies(issue).filter((c) => /@bob/.test(c.body ?? '')).length, 1);
    assert.match(
      replies(issue)[1]!.body ?? '',
      new RegExp(
        `\`thopter-000000000000\` is not a live thopter of this issue; its live thopter is \`${id}\``,
      ),
    );
    assert.deepEqual(gh.reactions(REPO, { commentId: tell.id }), []);
    const record = (await hubs[0]!.store.get(id))!;
    assert.equal(record.told?.length, 1, 'only alice’s first message was recorded');
    assert.equal(model.stepsTaken, before, 'the agent was told nothing');
  });

  it('refuses an oversized message with one reply that says what to do, and records nothing', async () => {
    const long = 'x'.repeat(MAX_TELL_CHARS + 1);
    await assert.rejects(tellAgent(hubs[0]!, id, { key: 'test:long', text: long }), {
      code: 'bad-input',
      message: new RegExp(`more than ${MAX_TELL_CHARS}: shorten it`),
    });
    const tell = gh.addComment(REPO, issue, { user: 'alice', body: `/thopter tell ${long}` });
    const refused = await waitFor('the refusal', () =>
      replies(issue).find((c) => /characters, more than/.test(c.body ?? '')),
    );
    assert.match(refused.body ?? '', /@alice: the message has 20001 characters, more than 20000: shorten it/);
    assert.deepEqual(gh.reactions(REPO, { commentId: tell.id }), []);
    assert.equal((await hubs[0]!.store.get(id))!.told?.length, 1, 'nothing more was recorded');
  });

  it('answers a tell for a thopter still in line with one reply, and tells it nothing', async () => {
    const waiting = gh.addIssue(REPO, { title: 'In line', body: 'x', user: 'alice' });
    const queued = `thopter-${randomBytes(6).toString('hex')}`;
    // A thopter in line for a slot (its record only: no lifecycle job takes it up here).
    await hubs[0]!.store.create({
      id: queued,
      source: 'github',
      repository: REPO,
      cloneUrl: 'unused',
      repoName: 'widget',
      issue: { number: waiting.number, title: 'In line', body: 'x', comments: [] },
      gc: 'default',
      prompt: 'default',
      priority: 100,
      requestedBy: 'alice',
      createdAt: new Date().toISOString(),
    });
    gh.addComment(REPO, waiting.number, { user: 'alice', body: '/thopter tell start with the tests' });
    const reply = await waitFor('the reply', () => replies(waiting.number)[0], { timeoutMs: 30_000 });
    assert.match(
      reply.body ?? '',
      new RegExp(
        `@alice: thopter \`${queued}\` is queued: its agent is not started yet, so your message was not sent`,
      ),
    );
    assert.equal((await hubs[0]!.store.get(queued))!.told, undefined);
    await hubs[0]!.store.finish(queued, 'destroyed', 'test over');
  });

  it('answers a tell on an issue with no live thopter with one reply that offers continue', async () => {
    const lonely = gh.addIssue(REPO, { title: 'Nobody here', body: 'x', user: 'alice' }).number;
    gh.addComment(REPO, lonely, { user: 'alice', body: '/thopter tell are you there?' });
    const reply = await waitFor('the reply', () => replies(lonely)[0], { timeoutMs: 30_000 });
    assert.match(reply.body ?? '', /@alice: there is no live thopter on this issue to tell/);
    assert.match(reply.body ?? '', /`\/thopter continue`/);
  });

  it('reports a turn that answers a tell even when the agent’s last words did not change', async () => {
    // The same words as its last answer: without a tell, such a turn is not reported.
    model.push({ text: ANSWER });
    const again = gh.addComment(REPO, issue, { user: 'alice', body: '/thopter tell Say it once more.' });
    const report = await waitFor(
      'the report of the third turn',
      () => reports(issue).find((c) => /:turn-3 -->/.test(c.body ?? '')),
      { timeoutMs: 120_000 },
    );
    const body = report.body ?? '';
    assert.match(body, new RegExp(`It answers @alice's \\[message\\]\\(${escape(again.html_url)}\\)\\.`));
    assert.equal((body.match(/\[message\]/g) ?? []).length, 1, 'the first message was answered before');
    assert.match(body, new RegExp(`^> ${escape(ANSWER)}$`, 'm'));
  });

  it('does not act again on a tell the hub reacted to, after Redis forgot it (no second reply)', async () => {
    const issue2 = gh.addIssue(REPO, { title: 'Told before', body: 'x', user: 'alice' }).number;
    const old = gh.addComment(REPO, issue2, { user: 'alice', body: '/thopter tell old news' });
    // The hub acted on it before its Redis was emptied: its reaction is all that is left.
    const res = await fetch(`${gh.url}/repos/${REPO}/issues/comments/${old.id}/reactions`, {
      method: 'POST',
      headers: { authorization: `token ${ISSUES_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ content: 'eyes' }),
    });
    assert.equal(res.status, 201);
    gh.addComment(REPO, issue2, { user: 'alice', body: '/thopter tell new news' });
    const reply = await waitFor('the reply to the new tell', () => replies(issue2)[0], { timeoutMs: 30_000 });
    assert.match(reply.body ?? '', /no live thopter/);
    // The polls look at a comment before the ones after it: the old one was passed over by then.
    const jobs = await hubs[0]!.queues.queues.github.getJobs();
    assert.deepEqual(
      jobs.filter((j) => JSON.stringify(j.data).includes(`comment:${old.id}`)),
      [],
      'nothing was queued for the old tell',
    );
    assert.equal(replies(issue2).length, 1);
    assert.deepEqual(gh.reactions(REPO, { commentId: old.id }), [{ login: 'thopter-hub', content: 'eyes' }]);
  });

  it('delivers a key once from two hubs, and never pastes a message a hub died pasting', async () => {
    model.push({ text: 'Once.' });
    const [a, b] = await Promise.all(
      hubs.map((h) => tellAgent(h, id, { key: 'test:once', text: LONG, from: 'alice' })),
    );
    assert.deepEqual([a, b], ['told', 'told']);
    // A hub died after marking this one `delivering`, before it knew whether the paste arrived.
    const interrupted = {
      key: 'test:interrupted',
      text: 'Half pasted.',
      from: 'alice',
      at: new Date().toISOString(),
      state: 'delivering' as const,
    };
    assert.equal(await hubs[0]!.store.addTold(id, interrupted), 'recorded');
    await hubs[0]!.queues.enqueue('tell', { thopterId: id, label: REPO, key: interrupted.key });
    const settled = await waitFor('both messages settled', async () => {
      const told = (await hubs[0]!.store.get(id))?.told ?? [];
      const once = told.find((m) => m.key === 'test:once');
      const half = told.find((m) => m.key === interrupted.key);
      return once?.state === 'delivered' && half?.state === 'undelivered' ? { once, half } : undefined;
    });
    assert.match(settled.half.reason ?? '', /may or may not have reached the agent/);
    await waitFor('the agent to be asked with the message', () =>
      model.requests.some((r) => userMessages(r.body).some((t) => t.includes('Say this once only.'))),
    );
    const texts = model.requests.flatMap((r) => userMessages(r.body));
    const carrying = [...new Set(texts.filter((t) => t.includes('Say this once only.')))];
    assert.equal(carrying.length, 1);
    // A long paste arrives whole too, Enter and all.
    assert.equal(
      /^\s*<pasted_content[^>]*>\n([\s\S]*)\n<\/pasted_content/.exec(carrying[0]!)?.[1] ?? carrying[0],
      LONG,
    );
    assert.equal(
      userMessages(model.requests.filter((r) => r.step !== undefined).at(-1)!.body).filter((t) =>
        t.includes('Say this once only.'),
      ).length,
      1,
    );
    assert.ok(!texts.some((t) => t.includes('Half pasted.')), 'the interrupted message was not pasted again');
    const events = await hubs[0]!.store.events(id);
    assert.ok(events.some((e) => e.type === 'tell-undelivered' && /may or may not/.test(e.message)));
    // Its author hears of it on the issue, once.
    await waitFor('the reply that it did not arrive', () =>
      replies(issue).some((c) => /did not reach thopter/.test(c.body ?? '')),
    );
    const said = replies(issue).filter((c) => /did not reach thopter/.test(c.body ?? ''));
    assert.equal(said.length, 1);
    assert.match(
      said[0]!.body ?? '',
      new RegExp(`@alice: your message did not reach thopter \`${id}\`: the hub stopped while pasting it`),
    );
  });

  it('takes a tell written in the issue body, and reacts on the issue itself', async () => {
    model.push({ text: 'Heard you from the body.' });
    gh.editIssue(REPO, issue, { body: 'Add one.\n\n/thopter tell Told from the issue body.', user: 'alice' });
    await waitFor('the reaction on the issue', () =>
      gh
        .reactions(REPO, { issueNumber: issue })
        .some((r) => r.login === 'thopter-hub' && r.content === 'eyes'),
    );
    await waitFor('the agent to be asked with it', () =>
      model.requests.some((r) => userMessages(r.body).some((t) => t.includes('Told from the issue body.'))),
    );
    const told = (await hubs[0]!.store.get(id))!.told!.find((m) => m.text === 'Told from the issue body.');
    assert.equal(told?.key, `github:${REPO}#${issue}@body`);
    assert.equal(told?.url, gh.issue(REPO, issue).html_url);
  });
});

describe('the tell job: at most one paste, through the transport', () => {
  // The jobs here are run by hand against a fake transport: the hubs' own workers keep off them.
  before(() => hubs[0]!.queues.queues.tell.pause());
  after(() => hubs[0]!.queues.queues.tell.resume());

  /** A thopter that runs on a machine whose transport only records what it is asked to run. */
  async function fakeThopter(
    transport: Pick<Transport, 'exec'> & Partial<Pick<Transport, 'readFile'>>,
    asked: Partial<Request> = {},
    screen = () => '',
  ) {
    const id = `thopter-${randomBytes(6).toString('hex')}`;
    const request = aRequest({
      id,
      source: 'api',
      issue: { title: 'told by a fake', body: '', comments: [] },
      requestedBy: 'api',
      createdAt: new Date().toISOString(),
      ...asked,
    });
    const hub = hubs[0]!;
    await hub.store.create(request);
    await hub.store.setMachine(id, {
      id: `m-${id}`,
      provider: 'local',
      workBranch: 'b',
      state: 'created',
      createdAt: request.createdAt,
    });
    await hub.store.setState(id, 'running', 'runningAt');
    const deps = {
      store: hub.store,
      queues: hub.queues,
      log: createLogger('silent'),
      provider: { snapshot: async () => ({ screen: screen(), agentRunning: true, sessionAlive: true }) },
      // (No turns have ended on it: its turns file does not exist.)
      transports: {
        get: async () => ({
          paths: { home: '/nonexistent' },
          readFile: async () => Promise.reject(new Error('ENOENT')),
          ...transport,
        }),
      },
    } as unknown as ProcessorDeps;
    const run = (key: string, attemptsMade = 0) =>
      tellProcessor(deps)({
        id: 'job',
        data: { thopterId: id, label: 'x', key },
        attemptsMade,
        opts: { attempts: 6 },
      } as unknown as Job<JobTable['tell']>);
    return { id, run, deps };
  }

  it('retries a failed load, pastes once, and never passes the text as an argument', async () => {
    const calls: { argv: string[]; input?: unknown }[] = [];
    let loadFails = 1;
    const { id, run } = await fakeThopter({
      exec: async (argv, opts) => {
        calls.push({ argv, input: opts?.input });
        if (argv[1] === 'load-buffer' && loadFails-- > 0)
          return { exitCode: 1, stdout: '', stderr: 'no server' };
        return { exitCode: 0, stdout: '', stderr: '' };
      },
    });
    const text = 'two\nlines; $(rm -rf /)';
    assert.equal(await tellAgent(hubs[0]!, id, { key: 'k', text }), 'told');
    await assert.rejects(run('k'), /tmux could not load the message: no server/);
    assert.equal((await hubs[0]!.store.told(id, 'k'))?.state, 'queued', 'a failed load pasted nothing');
    assert.equal(await run('k', 1), 'delivered');
    assert.equal(await run('k', 2), 'already delivered');
    const pastes = calls.filter((c) => c.argv.includes('paste-buffer'));
    assert.equal(pastes.length, 1);
    assert.deepEqual(pastes[0]!.argv.slice(0, 4), ['tmux', 'paste-buffer', '-p', '-d']);
    assert.deepEqual(pastes[0]!.argv.slice(-4), ['send-keys', '-t', 'thopter', 'Enter']);
    assert.deepEqual(
      calls.filter((c) => c.argv[1] === 'load-buffer').map((c) => c.input),
      [text, text],
    );
    assert.ok(
      calls.every((c) => !c.argv.some((a) => a.includes('lines;'))),
      'the text is never an argument',
    );
  });

  it('marks a paste whose connection dropped as maybe not delivered, and never pastes it again', async () => {
    let pastes = 0;
    const { id, run } = await fakeThopter({
      exec: async (argv) => {
        if (argv[1] === 'paste-buffer' && ++pastes) throw new Error('the SSH connection dropped');
        return { exitCode: 0, stdout: '', stderr: '' };
      },
    });
    assert.equal(await tellAgent(hubs[0]!, id, { key: 'k', text: 'hello' }), 'told');
    assert.equal(await run('k'), 'not delivered');
    const told = await hubs[0]!.store.told(id, 'k');
    assert.equal(told?.state, 'undelivered');
    assert.match(told?.reason ?? '', /may or may not have reached the agent: the SSH connection dropped/);
    assert.equal(await run('k', 1), 'already undelivered');
    assert.equal(pastes, 1);
  });

  it('presses Enter once more when a waiting agent left the paste in its input, never otherwise', async () => {
    // The machine's turns file: the agent waits when its last turn ended after its last prompt.
    const waiting = '2026-12-03T10:00:00.000Z\tprompt\n2026-12-03T10:00:09.000Z\t{}\n';
    const atWork = `${waiting}2026-12-03T10:00:20.000Z\tprompt\n`;
    /** Claude Code's input box as its screen shows it (2.1.328), holding `input`. */
    const box = (input: string) =>
      `● Done.\n${'─'.repeat(40)}\n❯ ${input}\n${'─'.repeat(40)}\n  ⏵⏵ bypass permissions on`;
    /**
     * Told once. Its agent takes the prompt at the `takesAt`-th Enter (0: never); its prompt hook
     * marks it unless `marks` is false; until taken, its input box shows the text if `shows`.
     */
    async function tell(turns: string, takesAt: number, { marks = true, shows = true } = {}) {
      let file = turns;
      let enters = 0;
      let taken = false;
      const { id, run } = await fakeThopter(
        {
          readFile: async () => Buffer.from(file),
          exec: async (argv) => {
            if (argv[0] === 'grep') {
              // The prompt marks counted as `grep -c` does (exit 1 when none).
              const n = file.split('\n').filter((l) => l.endsWith('\tprompt')).length;
              return { exitCode: n ? 0 : 1, stdout: `${n}\n`, stderr: '' };
            }
            if (argv.at(-1) === 'Enter' && ++enters === takesAt) {
              taken = true;
              if (marks) file += `${new Date().toISOString()}\tprompt\n`;
            }
            return { exitCode: 0, stdout: '', stderr: '' };
          },
        },
        {},
        () => box(!taken && shows ? 'hello' : ''),
      );
      assert.equal(await tellAgent(hubs[0]!, id, { key: 'k', text: 'hello' }), 'told');
      assert.equal(await run('k'), 'delivered');
      const events = await hubs[0]!.store.events(id);
      assert.equal(events.filter((e) => e.type === 'tell-delivered').length, 1);
      return { enters, said: events.find((e) => e.type === 'tell-enter')?.message };
    }
    assert.deepEqual(await tell(waiting, 1), { enters: 1, said: undefined });
    assert.deepEqual(await tell(waiting, 2), {
      enters: 2,
      said: "the hub's message: the agent took it after a second Enter",
    });
    assert.deepEqual(await tell(waiting, 0), {
      enters: 2,
      said: "the hub's message: the agent has not taken it, even after a second Enter: it may be in its input, waiting for Enter",
    });
    // Taken, but its hook is slow: the input box is empty, so Enter is not pressed into it.
    assert.deepEqual(await tell(waiting, 1, { marks: false }), {
      enters: 1,
      said: "the hub's message: its prompt hook did not mark it within 4 s, and its input box does not show it: nothing more was pressed",
    });
    // Something else on screen than the message in the box (a dialog, another text): no Enter.
    assert.deepEqual((await tell(waiting, 0, { shows: false })).enters, 1);
    // At work, it queues the message and takes it when its turn ends: one Enter, nothing awaited.
    assert.deepEqual(await tell(atWork, 0), { enters: 1, said: undefined });
  });

  it('reports the turn that answers a message when it ends, even in the same words, given by its Stop hook', async () => {
    // Two turns ended, each saying the same; the hook's input carries the words (status/turns.ts).
    const ended = new Date().toISOString();
    const stop = `${ended}\t${JSON.stringify({ last_assistant_message: 'Same words.' })}\n`;
    const { id, deps } = await fakeThopter(
      {
        exec: async () => assert.fail('nothing runs on the machine'),
        readFile: async () => Buffer.from(stop + stop),
      },
      { source: 'github', issue: { number: 7, title: 'told by a fake', body: '', comments: [] } },
    );
    const { store } = hubs[0]!;
    const told = { key: 'k', text: 'hello', from: 'alice', at: ended, state: 'queued' } as const;
    assert.equal(await store.addTold(id, told), 'recorded');
    await store.moveTold(id, told, { state: 'delivered', deliveredAt: ended, turnsAtDelivery: 1 });
    const queued: unknown[] = [];
    const finishing = {
      ...deps,
      queues: { enqueue: async (name: string, data: { key?: string }) => void queued.push([name, data.key]) },
      queuePullRequest: async () => {},
    } as unknown as ProcessorDeps;
    // The turn ended just now: a message read from the transcript would be read again for 30 s
    // (it may lag); the hook's is the turn's own.
    const record = {
      ...(await store.get(id))!,
      turns: { count: 2, lastEndedAt: ended },
      finish: { reported: 1, lastMessage: { text: 'Same words.' } },
    };
    await actOnAgentNews(finishing, record, undefined, createLogger('silent'));
    assert.deepEqual(queued, [['report', 'turn-2']]);
    assert.equal((await store.told(id, 'k'))?.answeredIn, 'turn-2');
  });

  it('records why a thopter being torn down was not told, and tells an ended one nothing', async () => {
    const { id, run } = await fakeThopter({
      exec: async () => assert.fail('nothing runs on the machine'),
    });
    assert.equal(await tellAgent(hubs[0]!, id, { key: 'k', text: 'hello' }), 'told');
    await hubs[0]!.store.requestDestroy(id, 'test');
    assert.equal(await run('k'), 'not delivered');
    assert.equal((await hubs[0]!.store.told(id, 'k'))?.reason, 'the thopter is being torn down');
    await hubs[0]!.store.finish(id, 'destroyed', 'test');
    assert.equal(await tellAgent(hubs[0]!, id, { key: 'k2', text: 'hello' }), 'ended');
    assert.equal(await hubs[0]!.store.told(id, 'k2'), null);
    assert.equal(await tellAgent(hubs[0]!, 'thopter-000000000000', { key: 'k', text: 'hi' }), 'unknown');
  });
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
