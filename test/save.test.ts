import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { createLogger } from '../src/log.js';
import { TransportPool } from '../src/processors/deps.js';
import { save } from '../src/processors/save.js';
import { startFakeGitHub, type FakeGitHub } from './fakes/github.js';
import { api, TestWorld, TOKEN as HUB_TOKEN, writeFixture } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

const world = new TestWorld();
let gh: FakeGitHub;
/** The agent in these tests leaves its work uncommitted, as an agent stopped mid-task does. */
let agent: string;

before(async () => {
  await world.start();
  gh = await startFakeGitHub();
  agent = writeFixture(
    path.join(world.dir, 'fixtures'),
    'agent-leaves-work.sh',
    `#!/usr/bin/env bash
# Leaves files uncommitted in the clone (one of them gitignored), on the work branch or, with
# "elsewhere", on another branch; then stays like an agent that waits (or, with "quits", exits).
set -euo pipefail
branch=$(grep -o 'thopter/[A-Za-z0-9]*--[a-z0-9]*' ./prompt.md | head -n 1)
dir=$(find . -mindepth 2 -maxdepth 2 -name .git -type d | head -n 1 | xargs dirname)
cd "$dir"
if [ "\${1:-}" = elsewhere ]; then git checkout -q -b elsewhere; fi
echo "notes on $branch" > NOTES.md
mkdir -p src && echo "half-done code" > src/feature.txt
echo "more" >> README.md
echo "*.log" > .gitignore
echo "debug output" > debug.log
echo "agent: left work uncommitted"
if [ "\${1:-}" = quits ]; then exit 0; fi
exec sleep 100000
`,
    0o755,
  );
});
// A test that failed half-way must not leave its hub working on the next test's thopters.
afterEach(() => world.closeHubs());
after(async () => {
  await gh?.close();
  await world.close();
});

const git = (bare: string, args: string[]) =>
  execFileSync('git', ['-C', bare, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();

const until = (url: string, id: string, pred: (t: any) => boolean, what: string) =>
  waitFor(what, async () => {
    const t = (await api(url, 'GET', `/api/thopters/${id}`)).body;
    return pred(t) ? t : undefined;
  });

/** Waits until the agent of a running thopter has left its work in the clone. */
async function workLeft(url: string, id: string, repoName: string) {
  const t = await until(url, id, (r) => r.state === 'running', 'running');
  const clone = path.join(world.dir, 'data', 'thopters', t.machine.id, 'home', 'workspace', repoName);
  await waitFor('the agent to leave its work', () => existsSync(path.join(clone, 'debug.log')));
  return t;
}

/** A bare origin whose pre-receive hook runs `script`. */
function originWithHook(name: string, script: string) {
  const bare = world.origin(name);
  writeFileSync(path.join(bare, 'hooks', 'pre-receive'), `#!/bin/sh\n${script}\n`, { mode: 0o755 });
  return bare;
}

describe('save before teardown (local provider)', () => {
  it('commits the uncommitted work on the idle timeout and pushes it, leaving gitignored files out', async () => {
    const origin = world.origin('idle');
    const hub = await world.hub({
      THOPTER_AGENT_COMMAND: `bash ${agent}`,
      THOPTER_IDLE_AFTER: '1s',
      THOPTER_IDLE_TIMEOUT: '3s',
    });
    const { body } = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title: 'idle' });
    const gone = await until(hub.url, body.id, (t) => t.state === 'destroyed', 'destroyed');
    assert.match(gone.endReason, /THOPTER_IDLE_TIMEOUT/);
    const branch = gone.workBranch;

    assert.ok(world.branches(origin).includes(branch), 'the work branch is on origin');
    assert.match(git(origin, ['log', '-1', '--format=%s', branch]), /^thopter: save work \(idle for \d+ s/);
    assert.equal(git(origin, ['log', '-1', '--format=%an <%ae>', branch]), 'Thopter <thopter@localhost>');
    const files = git(origin, ['ls-tree', '-r', '--name-only', branch]).split('\n').sort();
    assert.deepEqual(files, ['.gitignore', 'NOTES.md', 'README.md', 'src/feature.txt']);
    assert.match(git(origin, ['show', `${branch}:README.md`]), /more/);

    assert.equal(gone.saved.pushed, true);
    assert.equal(gone.saved.commit, git(origin, ['rev-parse', branch]));
    assert.deepEqual([...gone.saved.files].sort(), [
      '.gitignore',
      'NOTES.md',
      'README.md',
      'src/feature.txt',
    ]);
    const saved = gone.events.find((e: any) => e.type === 'saved');
    assert.match(
      saved.message,
      new RegExp(`committed ${gone.saved.commit.slice(0, 12)} \\(4 files: .*\\) and pushed ${branch}`),
    );
    const page = await (
      await fetch(`${hub.url}/thopters/${gone.id}`, { headers: { authorization: `Bearer ${HUB_TOKEN}` } })
    ).text();
    assert.match(
      page,
      new RegExp(`Work saved</dt>\\s*<dd class="saved">committed ${gone.saved.commit.slice(0, 12)}`),
    );
    // The save comes before the machine goes.
    const types = gone.events.map((e: any) => e.type);
    assert.ok(types.indexOf('saved') < types.indexOf('destroyed'));
    assert.equal(existsSync(path.join(world.dir, 'data', 'thopters', gone.machine.id)), false);
    await world.stopHub(hub);
  });

  it('DELETE saves by default, ?save=false discards, and ?save=maybe is refused and changes nothing', async () => {
    const origin = world.origin('api');
    const hub = await world.hub({ THOPTER_AGENT_COMMAND: `bash ${agent}` });
    const launch = async (title: string) =>
      (await api(hub.url, 'POST', '/api/thopters', { repository: origin, title })).body.id as string;
    const [kept, discarded] = [await launch('keep my work'), await launch('throw it away')];
    const keptRunning = await workLeft(hub.url, kept, 'api');
    const discardedRunning = await workLeft(hub.url, discarded, 'api');

    const bad = await api(hub.url, 'DELETE', `/api/thopters/${discarded}?save=maybe`);
    assert.equal(bad.status, 400);
    assert.match(bad.body.error.message, /save: must be true or false/);
    assert.equal((await api(hub.url, 'GET', `/api/thopters/${discarded}`)).body.state, 'running');

    assert.equal((await api(hub.url, 'DELETE', `/api/thopters/${kept}`)).status, 202);
    assert.equal((await api(hub.url, 'DELETE', `/api/thopters/${discarded}?save=false`)).status, 202);
    const keptGone = await until(hub.url, kept, (t) => t.state === 'destroyed', 'the saved one destroyed');
    const discardedGone = await until(
      hub.url,
      discarded,
      (t) => t.state === 'destroyed',
      'the other destroyed',
    );

    assert.ok(world.branches(origin).includes(keptRunning.workBranch), 'the saved work is on origin');
    assert.match(
      git(origin, ['log', '-1', '--format=%s', keptRunning.workBranch]),
      /^thopter: save work \(destroyed through the API\)$/,
    );
    assert.equal(keptGone.saved.pushed, true);

    assert.ok(
      !world.branches(origin).includes(discardedRunning.workBranch),
      'nothing of the discarded one was pushed',
    );
    assert.equal(discardedGone.saved.pushed, false);
    assert.equal(discardedGone.saved.commit, undefined);
    assert.ok(discardedGone.events.some((e: any) => e.type === 'save-skipped' && /discard/.test(e.message)));
    await world.stopHub(hub);
  });

  it('saves the work of a thopter whose provisioning failed after its clone', async () => {
    const origin = world.origin('quitter');
    const hub = await world.hub({ THOPTER_AGENT_COMMAND: `bash ${agent} quits` });
    const { body } = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title: 'quits' });
    const failed = await until(hub.url, body.id, (t) => t.state === 'failed', 'failed');
    assert.match(failed.endReason, /^launch-agent failed/);
    assert.ok(world.branches(origin).includes(failed.workBranch), 'its work is on origin');
    assert.match(
      git(origin, ['log', '-1', '--format=%s', failed.workBranch]),
      /^thopter: save work \(launch-agent failed/,
    );
    assert.equal(failed.saved.pushed, true);
    await world.stopHub(hub);
  });

  it('is idempotent: a second save (a teardown retried after a crash) finds nothing to commit or push', async () => {
    const origin = world.origin('twice');
    const hub = await world.hub({ THOPTER_AGENT_COMMAND: `bash ${agent}` });
    const { body } = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title: 'twice' });
    await workLeft(hub.url, body.id, 'twice');
    const transports = new TransportPool(hub.provider);
    try {
      const deps = { store: hub.store, transports, config: world.config(), log: createLogger('silent') };
      const first = await save(deps, (await hub.store.get(body.id))!, 'a crash test');
      assert.equal(first.pushed, true);
      assert.ok(first.commit);
      const second = await save(deps, (await hub.store.get(body.id))!, 'a crash test');
      assert.deepEqual(
        [second.commit, second.files, second.pushed, second.error],
        [undefined, [], false, undefined],
      );
      const branch = (await hub.store.get(body.id))!.machine!.workBranch;
      assert.equal(git(origin, ['rev-parse', branch]), first.commit, 'origin has the first save, once');
      const events = (await hub.store.events(body.id)).filter((e) => e.type === 'saved');
      assert.match(events.at(-1)!.message, /^nothing to save: thopter\/.* is clean and on origin$/);
    } finally {
      await transports.closeAll();
    }
  });

  it('saves nothing on a branch other than the work branch, and says so', async () => {
    const origin = world.origin('elsewhere');
    const hub = await world.hub({ THOPTER_AGENT_COMMAND: `bash ${agent} elsewhere` });
    const { body } = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title: 'wandered' });
    await workLeft(hub.url, body.id, 'elsewhere');
    await api(hub.url, 'DELETE', `/api/thopters/${body.id}`);
    const gone = await until(hub.url, body.id, (t) => t.state === 'destroyed', 'destroyed');
    assert.deepEqual(world.branches(origin), ['main'], 'nothing was pushed');
    assert.match(gone.saved.error, /the clone is on branch elsewhere, not the work branch thopter\//);
    assert.ok(
      gone.events.some((e: any) => e.type === 'save-failed' && /nothing saved on it/.test(e.message)),
    );
    await world.stopHub(hub);
  });

  it("reports a rejected push in git's words and still tears down", async () => {
    const origin = originWithHook('protected', 'echo "protected branch: pushes need a review" >&2\nexit 1');
    const hub = await world.hub({ THOPTER_AGENT_COMMAND: `bash ${agent}` });
    const { body } = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title: 'protected' });
    const running = await workLeft(hub.url, body.id, 'protected');
    await api(hub.url, 'DELETE', `/api/thopters/${body.id}`);
    const gone = await until(hub.url, body.id, (t) => t.state === 'destroyed', 'destroyed');
    assert.deepEqual(world.branches(origin), ['main']);
    assert.equal(gone.saved.pushed, false);
    assert.ok(gone.saved.commit, 'the work was committed in the clone');
    assert.match(gone.saved.error, /push rejected: .*pre-receive hook declined/);
    const event = gone.events.find((e: any) => e.type === 'save-failed');
    assert.match(event.message, /push rejected: .*protected branch: pushes need a review/);
    assert.equal(
      existsSync(path.join(world.dir, 'data', 'thopters', running.machine.id)),
      false,
      'machine gone',
    );
    await world.stopHub(hub);
  });

  it('does not let a save that hangs hold the teardown past THOPTER_SAVE_TIMEOUT', async () => {
    const release = path.join(world.dir, 'release-hung-push');
    const origin = originWithHook('hung', `while [ ! -e '${release}' ]; do sleep 0.2; done\nexit 1`);
    const hub = await world.hub({ THOPTER_AGENT_COMMAND: `bash ${agent}`, THOPTER_SAVE_TIMEOUT: '2s' });
    try {
      const { body } = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title: 'hung' });
      const running = await workLeft(hub.url, body.id, 'hung');
      await api(hub.url, 'DELETE', `/api/thopters/${body.id}`);
      const gone = await until(
        hub.url,
        body.id,
        (t) => t.state === 'destroyed',
        'destroyed while the push hangs',
      );
      assert.match(gone.saved.error, /^timed out after 2 s \(THOPTER_SAVE_TIMEOUT\)$/);
      assert.ok(gone.saved.commit, 'the commit made before the push hung is named');
      assert.ok(
        gone.events.some((e: any) => e.type === 'save-failed' && /timed out after 2 s/.test(e.message)),
      );
      assert.equal(existsSync(path.join(world.dir, 'data', 'thopters', running.machine.id)), false);
    } finally {
      writeFileSync(release, ''); // lets the hook (still waiting on origin's side) end
    }
    await world.stopHub(hub);
  });
});

describe('save before teardown (GitHub commands)', () => {
  const REPO = 'acme/saver';
  const TOKEN = 'ghp_issues_token_for_the_saver';

  it('/thopter kill and a closed issue save with the repository identity; /thopter kill --discard pushes nothing', async () => {
    const origin = world.origin('saver');
    gh.addToken(TOKEN, 'thopter-hub');
    gh.addRepo(REPO, { cloneUrl: origin });
    gh.setPermission(REPO, 'thopter-hub', 'write');
    gh.setPermission(REPO, 'alice', 'write');
    const hub = await world.hub({
      THOPTER_AGENT_COMMAND: `bash ${agent}`,
      GITHUB_API_URL: gh.url,
      GITHUB_INTEGRATION_JSON: JSON.stringify({
        repositories: { [REPO]: { issuesPAT: TOKEN, userName: 'Saver Bot', userEmail: 'bot@saver.test' } },
      }),
      GITHUB_ISSUES_POLLING_INTERVAL: '1',
    });
    const launch = async (title: string) => {
      const issue = gh.addIssue(REPO, { title, body: '/thopter', user: 'alice' });
      const t = await waitFor(`a thopter for ${title}`, async () =>
        (await hub.store.list()).find((r) => r.request.issue.number === issue.number),
      );
      return { issue: issue.number, running: await workLeft(hub.url, t.id, 'saver') };
    };
    const save = await launch('keep it');
    const discard = await launch('drop it');
    const close = await launch('done with it');

    gh.addComment(REPO, save.issue, { user: 'alice', body: '/thopter kill' });
    gh.addComment(REPO, discard.issue, { user: 'alice', body: '/thopter kill --discard' });
    gh.closeIssue(REPO, close.issue, { user: 'alice' });
    const saved = await until(
      hub.url,
      save.running.id,
      (t) => t.state === 'destroyed',
      'the killed one destroyed',
    );
    const dropped = await until(
      hub.url,
      discard.running.id,
      (t) => t.state === 'destroyed',
      'the discarded one destroyed',
    );

    const branch = save.running.workBranch;
    assert.ok(world.branches(origin).includes(branch), 'the killed one saved to origin');
    assert.match(
      git(origin, ['log', '-1', '--format=%s', branch]),
      /^thopter: save work \(\/thopter kill by @alice\)$/,
    );
    assert.equal(git(origin, ['log', '-1', '--format=%an <%ae>', branch]), 'Saver Bot <bot@saver.test>');
    assert.equal(saved.saved.pushed, true);
    await until(hub.url, close.running.id, (t) => t.state === 'destroyed', 'the closed one destroyed');
    assert.equal(
      git(origin, ['log', '-1', '--format=%s', close.running.workBranch]),
      'thopter: save work (the issue was closed)',
    );

    assert.ok(
      !world.branches(origin).includes(discard.running.workBranch),
      'nothing of --discard was pushed',
    );
    assert.match(dropped.saved.error, /discard/);
    assert.ok(dropped.events.some((e: any) => e.type === 'destroy-requested' && /discarded/.test(e.message)));
    await world.stopHub(hub);
  });

  it("the idle timeout saves into the work branch's pull request, and the report says so; a rejected push is reported", async () => {
    const repo = 'acme/idler';
    const coder = 'ghp_coder_token_for_the_idler';
    const origin = world.origin('idler');
    const guarded = originWithHook('guarded', 'echo "protected: pushes need review" >&2; exit 1');
    gh.addToken(TOKEN, 'thopter-hub');
    gh.addToken(coder, 'thopter-coder');
    gh.addRepo(repo, { cloneUrl: origin });
    gh.addRepo('acme/guarded', { cloneUrl: guarded });
    for (const r of [repo, 'acme/guarded']) {
      gh.setPermission(r, 'thopter-hub', 'write');
      gh.setPermission(r, 'thopter-coder', 'write');
      gh.setPermission(r, 'alice', 'write');
    }
    const hub = await world.hub({
      THOPTER_AGENT_COMMAND: `bash ${agent}`,
      THOPTER_IDLE_AFTER: '1s',
      THOPTER_IDLE_TIMEOUT: '4s',
      GITHUB_API_URL: gh.url,
      GITHUB_INTEGRATION_JSON: JSON.stringify({
        repositories: {
          [repo]: { issuesPAT: TOKEN, agentCoderPAT: coder },
          'acme/guarded': { issuesPAT: TOKEN, agentCoderPAT: coder },
        },
      }),
      GITHUB_ISSUES_POLLING_INTERVAL: '1',
    });
    const endReport = (r: string, n: number) =>
      waitFor(
        `the end report on ${r}#${n}`,
        () =>
          gh.comments(r, n).find((c) => /^<!-- thopter-report:thopter-[a-f0-9]+:end -->/.test(c.body ?? '')),
        { timeoutMs: 90_000 },
      );

    const idle = gh.addIssue(repo, { title: 'Idle away', body: '/thopter', user: 'alice' }).number;
    const report = (await endReport(repo, idle)).body ?? '';
    assert.match(report, /\*\*ended\*\*: idle for \d+ s \(THOPTER_IDLE_TIMEOUT\)/);
    assert.match(
      report,
      /Work saved: committed [0-9a-f]{12} \(4 files: .*\) and pushed thopter\/\d+--[a-f0-9]+ to origin\./,
    );
    const [pr] = gh.pullRequests(repo);
    assert.ok(pr, 'the saved work got its pull request');
    assert.equal(gh.pullRequests(repo).length, 1);
    assert.match(report, new RegExp(`Pull request: \\[#${pr.number}\\]\\(${pr.html_url}\\) \\(draft\\)`));
    assert.match(report, /1 commit ahead of `main`: 4 files changed/);
    assert.match(git(origin, ['log', '-1', '--format=%s', pr.head.ref]), /^thopter: save work \(idle for/);

    const blocked = gh.addIssue('acme/guarded', { title: 'Blocked', body: '/thopter', user: 'alice' }).number;
    const refused = (await endReport('acme/guarded', blocked)).body ?? '';
    assert.match(refused, /Work saved: committed [0-9a-f]{12} .*; .*protected: pushes need review/);
    assert.equal(gh.pullRequests('acme/guarded').length, 0, 'nothing reached GitHub, so no pull request');
    assert.deepEqual(world.branches(guarded), ['main']);
    await world.stopHub(hub);
  });
});
