import assert from 'node:assert/strict';
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';
import type { Hub } from '../src/hub.js';
import { FakeAnthropic } from './fakes/anthropic.js';
import type { FakeGitHub } from './fakes/github.js';
import { api, TestWorld, TOKEN } from './helpers/env.js';
import { startIssueAgentWorld } from './helpers/issue-agent.js';
import { waitFor } from './helpers/wait.js';

const world = new TestWorld();
const REPO = 'acme/widget';
let gh: FakeGitHub;
let model: FakeAnthropic;
let hub: Hub;
let env: Record<string, string>;
let release!: () => void;
const held = new Promise<void>((resolve) => (release = resolve));

const STALL_AFTER_MS = 10_000;

/** The newest mtime of a local thopter's transcripts, read the way the hub reads them. */
function transcriptMtime(machineId: string): number {
  const projects = path.join(world.dir, 'data', 'thopters', machineId, 'home', '.claude', 'projects');
  let newest = 0;
  for (const dir of readdirSync(projects))
    for (const f of readdirSync(path.join(projects, dir)))
      if (f.endsWith('.jsonl')) newest = Math.max(newest, statSync(path.join(projects, dir, f)).mtimeMs);
  return newest;
}

const reports = (issue: number) =>
  gh.comments(REPO, issue).filter((c) => /^<!-- thopter-report:/.test(c.body ?? ''));

async function thopterOf(issue: number): Promise<string> {
  return waitFor('the thopter of the issue', async () => {
    const list = await api(hub.url, 'GET', '/api/thopters');
    const found = (list.body.thopters as { id: string; issue: { number: number | null } }[]).find(
      (t) => t.issue.number === issue,
    );
    return found?.id;
  });
}

before(async () => {
  await world.start();
  ({ gh, model, hub, env } = await startIssueAgentWorld(world, {
    repositories: { [REPO]: {} },
    script: [
      // The first thopter's agent answers at once and waits at its prompt.
      { text: 'Nothing to do: the widget is fine.' },
      // The second's model never answers (until the test lets it): a hung API request.
      { text: 'Sorry, I was slow.', after: held },
    ],
    env: { THOPTER_STALL_AFTER: `${STALL_AFTER_MS / 1000}s` },
  }));
});
after(async () => {
  release();
  await model?.close();
  await gh?.close();
  await world.close();
});

describe('stalls: an agent mid-turn with nothing moving, told apart from one waiting at its prompt', () => {
  let idle: string;
  let idleIssue: number;

  it('an agent whose turn ended waits at its prompt', async () => {
    idleIssue = gh.addIssue(REPO, { title: 'Check the widget', body: 'Please.', user: 'alice' }).number;
    gh.addComment(REPO, idleIssue, { user: 'alice', body: '/thopter --gc default' });
    idle = await thopterOf(idleIssue);
    await waitFor('its turn to end', async () => ((await hub.store.get(idle))?.turns?.count ?? 0) >= 1, {
      timeoutMs: 180_000,
    });
  });

  it('reports an agent whose model never answers as stalled, once, with its screen', async () => {
    const issue = gh.addIssue(REPO, { title: 'Fix the widget', body: 'Please.', user: 'alice' }).number;
    gh.addComment(REPO, issue, { user: 'alice', body: '/thopter --gc default' });
    const id = await thopterOf(issue);
    await waitFor('its model to be asked', () => model.stepsTaken >= 2, { timeoutMs: 180_000 });
    const report = await waitFor(
      'the report of the stall',
      () => reports(issue).find((c) => /:stall-1 -->/.test(c.body ?? '')),
      { timeoutMs: 120_000 },
    );
    const body = report.body ?? '';
    assert.match(
      body,
      /\*\*seems stalled\*\*: it is mid-turn and has made no progress since \d{4}-\d\d-\d\dT/,
    );
    // What the screen shows last: Claude Code working on the prompt.
    assert.match(
      body,
      /Its screen shows:\n\n```text\n[^]*read \.\/prompt\.md for your instructions[^]*\n```/,
    );

    const view = (await api(hub.url, 'GET', `/api/thopters/${id}`)).body;
    assert.equal(view.state, 'running');
    assert.match(view.stalledSince, /^\d{4}-\d\d-\d\dT/);
    assert.equal(view.stalls, 1);
    await waitFor('the status comment to say it is stalled', () =>
      gh
        .comments(REPO, issue)
        .some(
          (c) =>
            /^<!-- thopter-ack:/.test(c.body ?? '') &&
            /\*\*running\*\*, but \*\*stalled\*\*: mid-turn with no progress since/.test(c.body ?? ''),
        ),
    );
    assert.ok(view.events.some((e: { type: string }) => e.type === 'stalled'));
    const page = await fetch(`${hub.url}/thopters/${id}`, { headers: { authorization: `Bearer ${TOKEN}` } });
    const html = await page.text();
    assert.match(html, /<span class="badge stalled">stalled<\/span>/);
    assert.match(html, /<dt>Stalled<\/dt>\s*<dd>\s*mid-turn with no progress since/);
    // The dashboard's list, as a browser shows it.
    const browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: ['--no-sandbox'],
    });
    try {
      const page = await browser.newPage();
      await page.goto(`${hub.url}/`);
      await page.waitForURL(/\/login/);
      await page.fill('input[name="token"]', TOKEN);
      await page.click('button[type="submit"]');
      const card = page.locator(`#thopters article[data-id="${id}"][data-condition="stalled"]`);
      await card.waitFor({ timeout: 30_000 });
      assert.match(await card.innerText(), /STALLED[^]*stalled: no progress for/i);
    } finally {
      await browser.close();
    }
    const list = (await api(hub.url, 'GET', '/api/thopters')).body.thopters as {
      id: string;
      stalledSince: string;
    }[];
    assert.equal(list.find((t) => t.id === id)?.stalledSince, view.stalledSince);

    // The agent at its prompt, still (screen and transcript) for longer than THOPTER_STALL_AFTER
    // as of a check of the hub's, and a check after that one (which ran that check's stall look),
    // is not stalled.
    const machineId = (await hub.store.get(idle))!.machine!.id;
    const lookedAt = await waitFor(
      'a check of the agent at its prompt after THOPTER_STALL_AFTER of stillness',
      async () => {
        const s = (await hub.store.get(idle))!.session!;
        const still = Math.max(Date.parse(s.lastActivity), transcriptMtime(machineId));
        return Date.parse(s.updatedAt) - still > STALL_AFTER_MS + 1000 ? s.updatedAt : undefined;
      },
      { timeoutMs: 90_000 },
    );
    await waitFor(
      'the check after it',
      async () => (await hub.store.get(idle))!.session!.updatedAt > lookedAt,
    );
    const quiet = (await api(hub.url, 'GET', `/api/thopters/${idle}`)).body;
    assert.equal(quiet.state, 'running');
    assert.equal(quiet.stalledSince, null);
    assert.equal(quiet.stalls, 0);
    assert.ok(!quiet.events.some((e: { type: string }) => e.type === 'stalled'));
    assert.deepEqual(
      reports(idleIssue).map((c) => /thopter-report:[^:]+:(\S+) -->/.exec(c.body ?? '')?.[1]),
      ['turn-1'],
    );

    // A new hub (a restart) keeps the stall as it was: not reported again, not ended by its new look.
    await world.stopHub(hub);
    const restartedAt = new Date().toISOString();
    hub = await world.hub(env);
    const sessionAt = async () => (await hub.store.get(id))!.session!.updatedAt;
    const firstLook = await waitFor('the new hub to check the stalled thopter', async () => {
      const at = await sessionAt();
      return at > restartedAt ? at : undefined;
    });
    // Its checks run one after another: a second one means the first one's stall look is done.
    await waitFor('the new hub to check it again', async () => (await sessionAt()) > firstLook);
    const kept = (await api(hub.url, 'GET', `/api/thopters/${id}`)).body;
    assert.equal(kept.stalledSince, view.stalledSince);
    assert.equal(kept.stalls, 1);
    assert.ok(!kept.events.some((e: { type: string }) => e.type === 'unstalled'));

    // The model answers: the agent moves again, and the stall is over.
    release();
    await waitFor(
      'the stall to end',
      async () => {
        const v = (await api(hub.url, 'GET', `/api/thopters/${id}`)).body;
        return v.stalledSince === null && v.events.some((e: { type: string }) => e.type === 'unstalled');
      },
      { timeoutMs: 60_000 },
    );
    assert.equal(reports(issue).filter((c) => /:stall-/.test(c.body ?? '')).length, 1);
  });
});
