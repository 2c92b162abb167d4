import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Hub } from '../src/hub.js';
import { TURNS_FILE, turnMessage } from '../src/status/turns.js';
import { bash, FakeAnthropic, userTexts } from './fakes/anthropic.js';
import type { FakeGitHub } from './fakes/github.js';
import { TestWorld, TOKEN } from './helpers/env.js';
import { startIssueAgentWorld } from './helpers/issue-agent.js';
import { waitFor } from './helpers/wait.js';

const world = new TestWorld();
const REPO = 'acme/widget';
let gh: FakeGitHub;
let model: FakeAnthropic;
let hubs: Hub[] = [];

const reports = (issue: number) =>
  gh.comments(REPO, issue).filter((c) => /^<!-- thopter-report:/.test(c.body ?? ''));

before(async () => {
  await world.start();
  // Two hubs on one Redis: each event is still reported once.
  ({ gh, model, hubs } = await startIssueAgentWorld(world, {
    repositories: { [REPO]: {} },
    coder: true,
    script: [
      { tools: [bash('cat prompt.md', 'Read the instructions')] },
      (req) => {
        const branch = /thopter\/\d+--[a-f0-9]+/.exec(userTexts(req).join('\n'))?.[0];
        if (!branch) return { text: 'prompt.md names no work branch.' };
        return {
          tools: [
            bash(
              `cd widget && echo hello > GREETING.md && git add GREETING.md && git commit -qm 'Add a greeting' && git push -q origin ${branch}`,
              'Commit and push',
            ),
          ],
        };
      },
      { text: 'I added GREETING.md and pushed it.\nAsk me if you want more.' },
    ],
    hubs: 2,
  }));
});
after(async () => {
  await model?.close();
  await gh?.close();
  await world.close();
});

describe('the finish line: reports on the issue', () => {
  let issue: number;
  let id: string;

  it('reports the end of the agent’s turn once, with its last message', async () => {
    issue = gh.addIssue(REPO, { title: 'Add a greeting', body: 'Please.', user: 'alice' }).number;
    gh.addComment(REPO, issue, { user: 'alice', body: '/thopter --gc default' });
    const [report] = await waitFor(
      'the report of the first turn',
      () => {
        const r = reports(issue);
        return r.length ? r : undefined;
      },
      { timeoutMs: 180_000 },
    );
    const body = report!.body ?? '';
    id = /thopter-report:(thopter-[a-f0-9]+):turn-1 -->/.exec(body)?.[1] ?? '';
    assert.ok(id, body);
    assert.match(body, /\*\*finished its turn\*\* and waits for an answer/);
    assert.match(body, /^> I added GREETING\.md and pushed it\.\n> Ask me if you want more\.$/m);
    // Quoted as the Stop hook was given it: this Claude Code passes the turn's last message there.
    const machineId = (await hubs[0]!.store.get(id))!.machine!.id;
    const turns = readFileSync(
      path.join(world.dir, 'data', 'thopters', machineId, 'home', TURNS_FILE),
      'utf8',
    );
    assert.deepEqual(
      turnMessage(turns, 1)?.text,
      'I added GREETING.md and pushed it.\nAsk me if you want more.',
    );
    assert.match(body, /Work branch: `thopter\/\d+--[a-f0-9]+`/);
    // The report opened the work branch's pull request first, and links it with the branch's figures.
    const [pr] = gh.pullRequests(REPO);
    assert.ok(pr, 'a pull request was opened');
    assert.equal(gh.pullRequests(REPO).length, 1);
    assert.match(
      body,
      new RegExp(
        `Pull request: \\[#${pr.number}\\]\\(${pr.html_url}\\) \\(draft\\) · 1 commit ahead of \`main\`: 1 file changed, \\+1 −0`,
      ),
    );
    assert.match(body, new RegExp(`\\[session log\\]\\(https://hub\\.example\\.test/thopters/${id}/log\\)`));
    // The status comment links to it.
    await waitFor('the status comment to link the report', () =>
      gh
        .comments(REPO, issue)
        .some(
          (c) =>
            /^<!-- thopter-ack:/.test(c.body ?? '') &&
            /\[latest report\]\(.*#issuecomment-\d+\)/.test(c.body ?? ''),
        ),
    );
  });

  it('reports that the agent exited, once', async () => {
    const record = (await hubs[0]!.store.get(id))!;
    const tmuxEnv = {
      ...process.env,
      TMUX_TMPDIR: path.join(world.dir, 'data', 'thopters', record.machine!.id, 'tmux'),
    };
    execFileSync('tmux', ['send-keys', '-t', 'thopter', '-l', '/exit'], { env: tmuxEnv });
    execFileSync('tmux', ['send-keys', '-t', 'thopter', 'Enter'], { env: tmuxEnv });
    const exit = await waitFor(
      'the report of the exit',
      () => reports(issue).find((c) => /:exit -->/.test(c.body ?? '')),
      {
        timeoutMs: 60_000,
      },
    );
    assert.match(exit.body ?? '', /\*\*the agent exited\*\*; its terminal is still open/);
    assert.ok((await hubs[0]!.store.events(id)).some((e) => e.type === 'agent-exited'));
  });

  it('reports the end with the reason and the last message, kept after the machine went', async () => {
    gh.addComment(REPO, issue, { user: 'alice', body: '/thopter kill' });
    const end = await waitFor(
      'the report of the end',
      () => reports(issue).find((c) => /:end -->/.test(c.body ?? '')),
      {
        timeoutMs: 60_000,
      },
    );
    assert.match(end.body ?? '', /\*\*ended\*\*: .*alice/);
    assert.match(end.body ?? '', /^> I added GREETING\.md and pushed it\./m);
    assert.match(end.body ?? '', /Ran for \d+/);
    assert.match(
      end.body ?? '',
      /Work saved: nothing to save: thopter\/\d+--[a-f0-9]+ is clean and on origin\./,
    );
    // One report per event, whichever of the two hubs saw it, however often it was looked at.
    const polls = () => gh.requests.filter((r) => r.canonicalPath === `/repos/${REPO}/issues`).length;
    const seen = polls();
    await waitFor('three polls more', () => polls() >= seen + 3);
    // The dashboard shows the last report and the agent's last words after the end.
    const html = await waitFor('the dashboard to show the last report', async () => {
      const page = await fetch(`${hubs[1]!.url}/thopters/${id}`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      const text = await page.text();
      return /Last report<\/dt>\s*<dd>\s*<a href="[^"]+#issuecomment-\d+">on the issue<\/a>\s*\(end\)/.test(
        text,
      )
        ? text
        : undefined;
    });
    assert.match(html, /Its last message<\/dt>\s*<dd><blockquote class="last-message">I added GREETING\.md/);
    const keys = reports(issue).map((c) => /thopter-report:[^:]+:(\S+) -->/.exec(c.body ?? '')?.[1]);
    assert.deepEqual(keys, ['turn-1', 'exit', 'end']);
  });
});
