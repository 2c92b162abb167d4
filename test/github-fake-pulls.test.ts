import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Octokit } from '@octokit/rest';
import { startFakeGitHub, type FakeGitHub } from './fakes/github.js';

/**
 * The fake GitHub's pull requests and compare, against GitHub's documented behaviour ("REST API
 * endpoints for pull requests", "Compare two commits"), over a real bare repository.
 */
const TOKEN = 'ghp_fake_coder_token_0123456789';
const REPO = 'acme/pulls';
const dir = mkdtempSync(path.join(tmpdir(), 'ghpulls-'));
const bare = path.join(dir, 'origin.git');
let gh: FakeGitHub;
let octokit: Octokit;
const [owner, repo] = REPO.split('/') as [string, string];

const git = (args: string[], cwd?: string) =>
  execFileSync('git', args, { cwd, stdio: 'pipe', encoding: 'utf8' });

/** Pushes `branch` with one commit per file on top of main. */
function pushBranch(branch: string, files: Record<string, string>) {
  const work = path.join(dir, `work-${branch.replace(/\W/g, '-')}`);
  git(['clone', '-q', bare, work]);
  git(['checkout', '-q', '-b', branch], work);
  for (const [name, content] of Object.entries(files)) {
    writeFileSync(path.join(work, name), content);
    git(['add', name], work);
    git(['-c', 'user.email=t@t', '-c', 'user.name=t', 'commit', '-qm', `add ${name}`], work);
  }
  git(['push', '-q', 'origin', branch], work);
}

before(async () => {
  const seed = path.join(dir, 'seed');
  git(['init', '-q', '--bare', '-b', 'main', bare]);
  git(['init', '-q', '-b', 'main', seed]);
  writeFileSync(path.join(seed, 'README.md'), 'one\ntwo\n');
  git(['add', '.'], seed);
  git(['-c', 'user.email=t@t', '-c', 'user.name=t', 'commit', '-qm', 'initial'], seed);
  git(['push', '-q', bare, 'main'], seed);
  gh = await startFakeGitHub();
  gh.addToken(TOKEN, 'coder');
  gh.addRepo(REPO, { cloneUrl: bare });
  const quiet = () => {};
  octokit = new Octokit({
    baseUrl: gh.url,
    auth: TOKEN,
    log: { debug: quiet, info: quiet, warn: quiet, error: quiet },
  });
  pushBranch('feature/a', { 'a.txt': 'a\nb\nc\n', 'b.txt': 'x\n' });
  pushBranch('empty', {});
});
after(async () => {
  await gh?.close();
  rmSync(dir, { recursive: true, force: true });
});

const status = async (p: Promise<unknown>) =>
  p.then(
    () => 200,
    (e: { status: number; response?: { data?: unknown } }) => ({ status: e.status, data: e.response?.data }),
  );

describe('compare', () => {
  it('counts what the head has that the base lacks, files with their additions and deletions', async () => {
    const { data } = await octokit.rest.repos.compareCommitsWithBasehead({
      owner,
      repo,
      basehead: 'main...feature/a',
    });
    assert.equal(data.status, 'ahead');
    assert.equal(data.ahead_by, 2);
    assert.equal(data.behind_by, 0);
    assert.deepEqual(
      data.commits.map((c) => c.commit.message),
      ['add a.txt', 'add b.txt'],
    );
    assert.deepEqual(
      data.files?.map((f) => [f.filename, f.status, f.additions, f.deletions]),
      [
        ['a.txt', 'added', 3, 0],
        ['b.txt', 'added', 1, 0],
      ],
    );
    const same = await octokit.rest.repos.compareCommitsWithBasehead({
      owner,
      repo,
      basehead: `main...${owner}:empty`,
    });
    assert.equal(same.data.status, 'identical');
    assert.equal(same.data.ahead_by, 0);
  });

  it('answers 404 for a branch that does not exist', async () => {
    const r = await status(
      octokit.rest.repos.compareCommitsWithBasehead({ owner, repo, basehead: 'main...nope' }),
    );
    assert.equal((r as { status: number }).status, 404);
  });
});

describe('pull requests', () => {
  it('creates a draft, lists it by head, gets and updates it; it is an issue too', async () => {
    const { data: pr, status: created } = await octokit.rest.pulls.create({
      owner,
      repo,
      title: 'Feature A',
      head: 'feature/a',
      base: 'main',
      body: 'Closes #1',
      draft: true,
    });
    assert.equal(created, 201);
    assert.equal(pr.draft, true);
    assert.equal(pr.head.ref, 'feature/a');
    assert.equal(pr.head.label, `${owner}:feature/a`);
    assert.equal(pr.base.ref, 'main');
    assert.equal(pr.user?.login, 'coder');
    assert.match(pr.html_url, new RegExp(`/${REPO}/pull/${pr.number}$`));

    const byHead = await octokit.rest.pulls.list({ owner, repo, head: `${owner}:feature/a` });
    assert.deepEqual(
      byHead.data.map((p) => p.number),
      [pr.number],
    );
    const otherHead = await octokit.rest.pulls.list({ owner, repo, head: `${owner}:empty` });
    assert.deepEqual(otherHead.data, []);
    const otherBase = await octokit.rest.pulls.list({ owner, repo, base: 'develop' });
    assert.deepEqual(otherBase.data, []);
    assert.equal(
      (await octokit.rest.issues.get({ owner, repo, issue_number: pr.number })).data.pull_request !==
        undefined,
      true,
    );

    const patched = await octokit.rest.pulls.update({
      owner,
      repo,
      pull_number: pr.number,
      title: 'Feature A, done',
    });
    assert.equal(patched.data.title, 'Feature A, done');
    const got = await octokit.rest.pulls.get({ owner, repo, pull_number: pr.number });
    assert.equal(got.data.title, 'Feature A, done');
    assert.equal(got.data.draft, true, 'REST cannot change draft');

    await octokit.rest.pulls.update({ owner, repo, pull_number: pr.number, state: 'closed' });
    assert.deepEqual((await octokit.rest.pulls.list({ owner, repo, head: `${owner}:feature/a` })).data, []);
    const all = await octokit.rest.pulls.list({ owner, repo, head: `${owner}:feature/a`, state: 'all' });
    assert.equal(all.data.length, 1);
    await octokit.rest.pulls.update({ owner, repo, pull_number: pr.number, state: 'open' });
  });

  it("refuses a second open one for the same head and base with GitHub's 422", async () => {
    const r = await status(
      octokit.rest.pulls.create({ owner, repo, title: 'again', head: `${owner}:feature/a`, base: 'main' }),
    );
    assert.deepEqual(r, {
      status: 422,
      data: {
        message: 'Validation Failed',
        errors: [
          {
            resource: 'PullRequest',
            code: 'custom',
            message: `A pull request already exists for ${owner}:feature/a.`,
          },
        ],
        documentation_url: 'https://docs.github.com/rest/pulls/pulls#create-a-pull-request',
        status: '422',
      },
    });
  });

  it('refuses a head with no commits ahead, a head or base that does not exist, and a missing field', async () => {
    const none = await status(
      octokit.rest.pulls.create({ owner, repo, title: 't', head: 'empty', base: 'main' }),
    );
    assert.equal((none as { status: number }).status, 422);
    assert.match(JSON.stringify(none), /No commits between main and empty/);
    for (const [head, base, field] of [
      ['nope', 'main', 'head'],
      ['feature/a', 'nope', 'base'],
    ] as const) {
      const r = await status(octokit.rest.pulls.create({ owner, repo, title: 't', head, base }));
      assert.equal((r as { status: number }).status, 422);
      assert.match(JSON.stringify(r), new RegExp(`"field":"${field}","code":"invalid"`));
    }
    const res = await fetch(`${gh.url}/repos/${REPO}/pulls`, {
      method: 'POST',
      headers: { authorization: `token ${TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ title: 't', base: 'main' }),
    });
    assert.equal(res.status, 422);
    assert.match(((await res.json()) as { message: string }).message, /"head" wasn't supplied/);
  });

  it('pages the list with a link header', async () => {
    const res = await fetch(`${gh.url}/repos/${REPO}/pulls?state=all&per_page=1`, {
      headers: { authorization: `token ${TOKEN}` },
    });
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as unknown[]).length, 1);
    // One pull request so far: pushing a second makes two pages.
    pushBranch('feature/b', { 'c.txt': 'c\n' });
    await octokit.rest.pulls.create({ owner, repo, title: 'B', head: 'feature/b', base: 'main' });
    const paged = await fetch(`${gh.url}/repos/${REPO}/pulls?state=all&per_page=1`, {
      headers: { authorization: `token ${TOKEN}` },
    });
    assert.match(paged.headers.get('link') ?? '', /rel="next"/);
    const every = await octokit.paginate(octokit.rest.pulls.list, { owner, repo, state: 'all', per_page: 1 });
    assert.equal(every.length, 2);
  });

  it('makes the pull request and then loses the answer when told to', async () => {
    pushBranch('feature/c', { 'd.txt': 'd\n' });
    gh.fail(`POST /repos/${REPO}/pulls`, { status: 502, afterServing: true });
    const r = await status(
      octokit.rest.pulls.create({ owner, repo, title: 'C', head: 'feature/c', base: 'main' }),
    );
    assert.equal((r as { status: number }).status, 502);
    assert.equal(
      gh.pullRequests(REPO).filter((p) => p.head.ref === 'feature/c').length,
      1,
      'made all the same',
    );
  });
});
