import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Hub } from '../src/hub.js';
import { loadConfig, ConfigError } from '../src/config.js';
import { GitHubClients } from '../src/github/clients.js';
import { createLogger } from '../src/log.js';
import { deliverWebhook, startFakeGitHub, type FakeGitHub } from './fakes/github.js';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { AGENT, api, TestWorld, writeFixture } from './helpers/env.js';
import { GitHttpServer } from './helpers/git-http.js';
import { waitFor } from './helpers/wait.js';

/**
 * The hub as a GitHub App: no PAT anywhere. The fake GitHub checks the App's JWTs with its public
 * key and issues installation tokens that expire on its own clock; the git server behind the
 * clone URLs asks the fake whether a token may fetch or push.
 */
const world = new TestWorld();
const APP_ID = 4242;
const SLUG = 'thopter-test';
const BOT = `${SLUG}[bot]`;
const WIDGET = 'acme/widget';
const SECRET = 'acme/secret';
const { privateKey, publicKey } = generateKeyPairSync('rsa', {
  modulusLength: 2048,
  privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
  publicKeyEncoding: { type: 'spki', format: 'pem' },
});
const WEBHOOK_SECRET = 'whsec-for-the-app-test-0001';
/** A repository watched with a PAT, beside the App. */
const PAT_REPO = 'other/patrepo';
const ISSUES_PAT = 'ghp_issues_token_beside_the_app_0001';
let gh: FakeGitHub;
let git: GitHttpServer;
let hub: Hub;
const logs: string[] = [];
let installation: number;
const PUSH_AGAIN = path.join(world.dir, 'push-again');
const PUSHED_AGAIN = path.join(world.dir, 'pushed-again');

before(async () => {
  await world.start();
  world.origin('widget');
  world.origin('secret');
  gh = await startFakeGitHub();
  // The clone URLs are served over smart HTTP; the fake GitHub decides who may fetch or push.
  const fullNames: Record<string, string> = { '/widget.git': WIDGET, '/secret.git': SECRET };
  git = await new GitHttpServer(world.dir, (token, repoPath, push) => {
    const fullName = fullNames[repoPath];
    return fullName !== undefined && gh.gitAccess(token, fullName, push);
  }).start();
  gh.addApp({ id: APP_ID, slug: SLUG, publicKey });
  for (const [name, file] of [
    [WIDGET, 'widget.git'],
    [SECRET, 'secret.git'],
  ] as const) {
    gh.addRepo(name, {
      private: true,
      cloneUrl: `${git.url}/${file}`,
      gitDir: path.join(world.dir, file),
    });
    gh.setPermission(name, 'alice', 'write');
  }
  installation = gh.installApp(APP_ID, 'acme', [WIDGET, SECRET]);
  gh.addToken(ISSUES_PAT, 'pat-hub');
  gh.addRepo(PAT_REPO, { cloneUrl: world.origin('patrepo') });
  gh.setPermission(PAT_REPO, 'pat-hub', 'write');
  gh.setPermission(PAT_REPO, 'alice', 'write');
  // The agent pushes its branch, then once more when the test says so (after its token was replaced).
  const agent = writeFixture(
    world.dir,
    'agent-twice.sh',
    `#!/usr/bin/env bash
set -euo pipefail
AGENT_STAY=0 bash ${AGENT}
dir=$(find . -mindepth 2 -maxdepth 2 -name .git -type d | head -n 1 | xargs dirname)
while [ ! -f ${PUSH_AGAIN} ]; do sleep 0.2; done
cd "$dir"
echo again >> THOPTER_WORK.md
git commit -qam "thopter: more work"
git push -q origin HEAD
echo pushed-again > ${PUSHED_AGAIN}
exec sleep 100000
`,
    0o755,
  );
  hub = await world.hub(
    {
      THOPTER_AGENT_COMMAND: `bash ${agent}`,
      // Every token is replaced ten seconds after it was minted (they live an hour): the test moves
      // the fake's clock past that hour, and the next replacement is what keeps pushes working.
      GITHUB_APP_TOKEN_RENEW_BEFORE: '3590s',
      // The App's repository keeps its settings here; the PAT repository works as before.
      GITHUB_INTEGRATION_JSON: JSON.stringify({
        repositories: {
          [WIDGET]: { userName: 'Widget Agent', userEmail: 'agent@widget.test' },
          [PAT_REPO]: { issuesPAT: ISSUES_PAT },
        },
      }),
      GITHUB_API_URL: gh.url,
      GITHUB_APP_ID: String(APP_ID),
      GITHUB_APP_PRIVATE_KEY: privateKey,
      GITHUB_ISSUES_POLLING_INTERVAL: '1',
      GITHUB_WEBHOOK_SECRET: WEBHOOK_SECRET,
      LOG_LEVEL: 'debug',
    },
    logs,
  );
});
after(async () => {
  await world.closeHubs();
  await git?.close();
  await gh?.close();
  await world.close();
});

const thopterOf = (issueNumber: number, repository = WIDGET) =>
  waitFor('the thopter', async () =>
    (await hub.store.list()).find(
      (t) => t.request.issue.number === issueNumber && t.request.repository === repository,
    ),
  );

describe('configuration', () => {
  const base = { GITHUB_APP_ID: '1' };
  it('refuses a key that is not a PEM private key, naming the variable and never the key', () => {
    assert.throws(
      () => loadConfig({ ...base, GITHUB_APP_PRIVATE_KEY: 'not-a-key-s3cr3t-value' }),
      (err: unknown) =>
        err instanceof ConfigError &&
        /GITHUB_APP_PRIVATE_KEY is not a PEM private key/.test(err.message) &&
        !err.message.includes('s3cr3t'),
    );
  });
  it('wants a key with an App ID, and an App ID with a key', () => {
    assert.throws(() => loadConfig(base), /GITHUB_APP_PRIVATE_KEY is needed with GITHUB_APP_ID/);
    assert.throws(
      () => loadConfig({ GITHUB_APP_PRIVATE_KEY: privateKey }),
      /GITHUB_APP_ID is needed with GITHUB_APP_PRIVATE_KEY/,
    );
  });
  it('reads the key from GITHUB_APP_PRIVATE_KEY_FILE, and from one line with \\n', () => {
    const file = writeFixture(world.dir, 'app.pem', privateKey, 0o600);
    assert.equal(
      loadConfig({ ...base, GITHUB_APP_PRIVATE_KEY_FILE: file }).github.app?.privateKey,
      privateKey,
    );
    const oneLine = privateKey.trim().replace(/\n/g, '\\n');
    assert.equal(loadConfig({ ...base, GITHUB_APP_PRIVATE_KEY: oneLine }).github.app?.privateKey, privateKey);
  });
});

describe('intake as a GitHub App', () => {
  it('watches the repositories where the App is installed and acknowledges as its bot', async () => {
    const issue = gh.addIssue(WIDGET, { title: 'Add a greeting', body: 'Please.', user: 'bob' });
    gh.addComment(WIDGET, issue.number, { user: 'alice', body: '/thopter' });
    const t = await thopterOf(issue.number);
    const ack = await waitFor('the acknowledgement', () =>
      gh.comments(WIDGET, issue.number).find((c) => c.body?.includes(t.id)),
    );
    assert.equal(ack.user?.login, BOT);
    // Every request the hub made to read or write the repository used an installation token.
    const reads = gh.requests.filter((r) => r.canonicalPath.startsWith(`/repos/${WIDGET}/`));
    assert.ok(reads.length > 0);
    assert.ok(
      reads.every((r) => r.login === BOT),
      JSON.stringify(reads.map((r) => r.login)),
    );
    await api(hub.url, 'DELETE', `/api/thopters/${t.id}`);
    await waitFor('the thopter ended', async () =>
      ['destroyed', 'failed'].includes((await hub.store.state(t.id))!),
    );
  });

  it('keeps watching a PAT repository beside the App, with its PAT', async () => {
    const issue = gh.addIssue(PAT_REPO, { title: 'PAT work', body: '/thopter', user: 'alice' });
    const t = await thopterOf(issue.number, PAT_REPO);
    const ack = await waitFor('the acknowledgement', () =>
      gh.comments(PAT_REPO, issue.number).find((c) => c.body?.includes(t.id)),
    );
    assert.equal(ack.user?.login, 'pat-hub');
    await api(hub.url, 'DELETE', `/api/thopters/${t.id}`);
    await waitFor('the thopter ended', async () =>
      ['destroyed', 'failed'].includes((await hub.store.state(t.id))!),
    );
  });

  it('refuses an API launch on a repository the App is not installed on, saying so', async () => {
    const res = await api(hub.url, 'POST', '/api/thopters', { repository: 'acme/nowhere', issueNumber: 1 });
    assert.equal(res.status, 422);
    assert.match(
      res.body.error.message,
      /nor among the GitHub App's installed repositories \(install the App on it\)/,
    );
  });

  it("never acts on the App's own comments", async () => {
    const issue = gh.addIssue(WIDGET, { title: 'Bot talk', body: 'Nothing here.', user: 'alice' });
    const bot = gh.addComment(WIDGET, issue.number, { user: BOT, body: '/thopter' });
    // A later command on the same issue is acted on: the bot's was seen, and skipped.
    gh.addComment(WIDGET, issue.number, { user: 'alice', body: '/thopter kill' });
    await waitFor('the reply to the kill', () =>
      gh.comments(WIDGET, issue.number).find((c) => c.user?.login === BOT && c.id !== bot.id),
    );
    const ids = (await hub.store.list()).filter((t) => t.request.issue.number === issue.number);
    assert.deepEqual(ids, []);
  });
});

describe('the installation changes', () => {
  it('picks up a repository added to the installation on its webhook', async () => {
    gh.addRepo('acme/later', { private: true });
    gh.setPermission('acme/later', 'alice', 'write');
    gh.setInstallationRepositories(installation, [WIDGET, SECRET, 'acme/later']);
    const delivery = {
      event: 'installation_repositories',
      payload: { action: 'added', installation: { id: installation }, repositories_added: [] },
      secret: WEBHOOK_SECRET,
    };
    const res = await deliverWebhook(`${hub.url}/github/webhook`, delivery);
    assert.equal(res.status, 202);
    const ready = (await api(hub.url, 'GET', '/ready')).body;
    assert.ok('acme/later' in ready.github, JSON.stringify(ready));
    const issue = gh.addIssue('acme/later', { title: 'Later', body: '/thopter', user: 'alice' });
    const t = await thopterOf(issue.number, 'acme/later');
    await api(hub.url, 'DELETE', `/api/thopters/${t.id}`);
    gh.setInstallationRepositories(installation, [WIDGET, SECRET]);
    await deliverWebhook(`${hub.url}/github/webhook`, delivery);
  });
});

describe('App errors say what to do', () => {
  const otherHub = (prefix: string, env: Record<string, string>) =>
    world.hub({
      GITHUB_API_URL: gh.url,
      HUB_REDIS_PREFIX: prefix,
      DATA_DIR: path.join(world.dir, `data-${prefix}`),
      GITHUB_ISSUES_POLLING_INTERVAL: '1',
      ...env,
    });
  const appHealth = async (on: Hub) => (await api(on.url, 'GET', '/ready')).body;

  it('lists the installations one listing at a time: calls during one wait for it and one more', async () => {
    const clients = new GitHubClients(
      world.config({
        GITHUB_API_URL: gh.url,
        GITHUB_APP_ID: String(APP_ID),
        GITHUB_APP_PRIVATE_KEY: privateKey,
      }),
      world.client,
      createLogger('silent'),
    );
    const listings = () =>
      gh.requests.filter((r) => r.method === 'GET' && r.path === '/app/installations').length;
    const before = listings();
    gh.delay('GET /app/installations', 500);
    await Promise.all([
      clients.refreshInstallations(),
      clients.refreshInstallations(),
      clients.refreshInstallations(),
    ]);
    assert.equal(listings() - before, 2);
    assert.deepEqual(clients.repositories.sort(), [WIDGET, SECRET].sort());
    await clients.refreshInstallations();
    assert.equal(listings() - before, 3);
  });

  it('shows on /ready that GitHub refused the key', async () => {
    const wrong = generateKeyPairSync('rsa', {
      modulusLength: 2048,
      privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
      publicKeyEncoding: { type: 'spki', format: 'pem' },
    });
    const bad = await otherHub('badkey', {
      GITHUB_APP_ID: String(APP_ID),
      GITHUB_APP_PRIVATE_KEY: wrong.privateKey,
    });
    const ready = await appHealth(bad);
    assert.deepEqual(ready.degraded, ['GitHub App'], JSON.stringify(ready));
    assert.match(ready.github['GitHub App'].error, /refused the App's JWT \(401.*generate a private key/);
    assert.ok(!JSON.stringify(ready).includes('PRIVATE KEY-----'));
    await world.stopHub(bad);
  });

  it('shows on /ready that the App is installed nowhere', async () => {
    const lonely = generateKeyPairSync('rsa', {
      modulusLength: 2048,
      privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
      publicKeyEncoding: { type: 'spki', format: 'pem' },
    });
    gh.addApp({ id: 5151, slug: 'lonely-app', publicKey: lonely.publicKey });
    const on = await otherHub('lonely', { GITHUB_APP_ID: '5151', GITHUB_APP_PRIVATE_KEY: lonely.privateKey });
    const ready = await appHealth(on);
    assert.match(
      ready.github['GitHub App'].error,
      /installed nowhere: install it .*https:\/\/github.com\/apps\/lonely-app\/installations\/new/,
    );
    await world.stopHub(on);
  });
});

/** Tokens minted for one repository alone: the thopters'. */
const thopterTokens = () => gh.issuedTokens.filter((t) => t.repositories?.join() === WIDGET);

describe("a thopter's own token", () => {
  it('fails the launch with what to do when GitHub refuses the token (422)', async () => {
    const refused = gh.fail('POST /app/installations/{id}/access_tokens', {
      status: 422,
      body: {
        message:
          'There is at least one repository that does not exist or is not accessible to the parent installation.',
        documentation_url:
          'https://docs.github.com/rest/apps/apps#create-an-installation-access-token-for-an-app',
        status: '422',
      },
    });
    const issue = gh.addIssue(WIDGET, { title: 'Refused', body: '/thopter', user: 'alice' });
    const t = await thopterOf(issue.number);
    await waitFor('the thopter failed', async () => (await hub.store.state(t.id)) === 'failed');
    assert.equal(refused.hits, 1);
    const status = await waitFor('the status comment to show the failure', () =>
      gh
        .comments(WIDGET, issue.number)
        .find((c) => c.user?.login === BOT && /\*\*failed\*\*/.test(c.body ?? '')),
    );
    assert.match(
      status.body ?? '',
      /GitHub refused a token for acme\/widget \(422: There is at least one repository.*add the repository to the installation's repository access/,
    );
  });

  it('waits out a 502 from GitHub on the token request within the clone, without failing it', async () => {
    const flaky = gh.fail('POST /app/installations/{id}/access_tokens', { status: 502 });
    const issue = gh.addIssue(WIDGET, { title: 'Flaky', body: '/thopter', user: 'alice' });
    const t = await thopterOf(issue.number);
    const cloned = await waitFor(
      'the clone',
      async () =>
        (await hub.store.get(t.id))?.phases['clone-repo']?.outcome === 'succeeded' &&
        (await hub.store.get(t.id)),
      { timeoutMs: 120_000 },
    );
    assert.equal(flaky.hits, 1);
    // Retried by the App's client itself, not by a second attempt at the phase.
    assert.equal(cloned!.phases['clone-repo']!.attempts, 1);
    await api(hub.url, 'DELETE', `/api/thopters/${t.id}`);
    await waitFor('destroyed', async () => (await hub.store.state(t.id)) === 'destroyed', {
      timeoutMs: 60_000,
    });
  });

  it('fails the launch with what to do when the App lacks a permission its thopters need (422)', async () => {
    const keys = generateKeyPairSync('rsa', {
      modulusLength: 2048,
      privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
      publicKeyEncoding: { type: 'spki', format: 'pem' },
    });
    // An App created without Contents permission: intake works, a thopter's token cannot be had.
    gh.addApp({
      id: 6161,
      slug: 'no-contents',
      publicKey: keys.publicKey,
      permissions: { issues: 'write', pull_requests: 'write', metadata: 'read' },
    });
    gh.addRepo('beta/gadget', { private: true, cloneUrl: `${git.url}/widget.git` });
    gh.setPermission('beta/gadget', 'alice', 'write');
    gh.installApp(6161, 'beta', ['beta/gadget']);
    const on = await world.hub({
      GITHUB_API_URL: gh.url,
      HUB_REDIS_PREFIX: 'nocontents',
      DATA_DIR: path.join(world.dir, 'data-nocontents'),
      GITHUB_ISSUES_POLLING_INTERVAL: '1',
      GITHUB_APP_ID: '6161',
      GITHUB_APP_PRIVATE_KEY: keys.privateKey,
    });
    const issue = gh.addIssue('beta/gadget', { title: 'Cannot push', body: '/thopter', user: 'alice' });
    const status = await waitFor('the status comment to show the failure', () =>
      gh
        .comments('beta/gadget', issue.number)
        .find((c) => c.user?.login === 'no-contents[bot]' && /\*\*failed\*\*/.test(c.body ?? '')),
    );
    assert.match(
      status.body ?? '',
      /GitHub refused a token for beta\/gadget \(422: The permissions requested are not granted to this installation.*Contents and Pull requests write permission/,
    );
    await world.stopHub(on);
  });

  it('clones and pushes with a token for its one repository, replaced past the hour, revoked at teardown, never shown', async () => {
    const issue = gh.addIssue(WIDGET, { title: 'Long work', body: 'Take your time.', user: 'bob' });
    gh.addComment(WIDGET, issue.number, { user: 'alice', body: '/thopter' });
    const t = await thopterOf(issue.number);
    await waitFor('the thopter running', async () => (await hub.store.state(t.id)) === 'running');
    const branch = (await hub.store.get(t.id))!.machine!.workBranch;
    await waitFor('the work branch on origin', () =>
      world.branches(path.join(world.dir, 'widget.git')).includes(branch),
    );

    // Narrow: one repository, contents and pull requests (metadata comes with every token).
    const first = thopterTokens().at(-1)!;
    assert.deepEqual(first.permissions, { metadata: 'read', contents: 'write', pull_requests: 'write' });
    const live = () => thopterTokens().filter((x) => !x.revoked && gh.tokenWorks(x.token));
    const [current] = await waitFor('one live token of the thopter', () =>
      live().length === 1 ? live() : undefined,
    );
    const read = (repo: string) =>
      fetch(`${gh.url}/repos/${repo}`, { headers: { authorization: `token ${current!.token}` } });
    assert.equal((await read(WIDGET)).status, 200);
    assert.equal((await read(SECRET)).status, 404, 'the thopter token reads another repository');
    assert.equal(gh.gitAccess(current!.token, SECRET, false), false);
    // It cannot comment on issues either: that is the hub's job.
    const comment = await fetch(`${gh.url}/repos/${WIDGET}/issues/${issue.number}/comments`, {
      method: 'POST',
      headers: { authorization: `token ${current!.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ body: 'hi' }),
    });
    assert.equal(comment.status, 403);

    // No token in the clone's git config: only the helper's path is there.
    const gitConfigs = execFileSync(
      'find',
      [path.join(world.dir, 'data', 'thopters'), '-path', '*/.git/config'],
      {
        encoding: 'utf8',
      },
    )
      .split('\n')
      .filter(Boolean);
    assert.ok(gitConfigs.length > 0);
    const configText = gitConfigs.map((f) => readFileSync(f, 'utf8')).join('\n');
    assert.match(configText, /helper = !.*git-credential/);
    for (const x of gh.issuedTokens) assert.ok(!configText.includes(x.token), 'a token in git config');
    // No token in the hub's processes' arguments while it runs.
    const ps = execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' });
    for (const x of gh.issuedTokens) assert.ok(!ps.includes(x.token), 'a token in a process argument');

    // An hour later on GitHub's clock, every token minted so far is dead; the hub replaces the
    // thopter's, and the agent's next push goes through with the new one.
    gh.advanceClock(61 * 60_000);
    assert.equal(gh.tokenWorks(current!.token), false);
    const fresh = await waitFor('a token minted after the hour', () =>
      live().find((x) => x.expiresAt > Date.now() + 90 * 60_000),
    );
    // The record keeps when it expires (written just after the machine got it), on the hub's
    // clock: GitHub's is 61 minutes ahead now, and the hub's renewal goes by its own.
    await waitFor(
      "the new token's expiry on the record, on the hub's clock",
      async () =>
        Math.abs(
          Date.parse((await hub.store.get(t.id))!.gitToken!.expiresAt) - (fresh.expiresAt - 61 * 60_000),
        ) < 5_000,
    );
    execFileSync('touch', [PUSH_AGAIN]);
    await waitFor('the second push', () => existsSync(PUSHED_AGAIN));
    const log = execFileSync(
      'git',
      ['-C', path.join(world.dir, 'widget.git'), 'log', '--format=%s', branch],
      {
        encoding: 'utf8',
      },
    );
    assert.match(log, /thopter: more work/);
    // GITHUB_INTEGRATION_JSON's settings for the repository apply to the App's thopters too.
    const author = execFileSync(
      'git',
      ['-C', path.join(world.dir, 'widget.git'), 'log', '-1', '--format=%an <%ae>', branch],
      {
        encoding: 'utf8',
      },
    ).trim();
    assert.equal(author, 'Widget Agent <agent@widget.test>');
    // The intake's own token was dead too: the hub gets a new one, reads the kill and answers it.
    // Teardown then revokes the thopter's token (read from the machine), with the token itself.
    const before = gh.requests.length;
    gh.addComment(WIDGET, issue.number, { user: 'alice', body: '/thopter kill' });
    await waitFor('the reply to the kill, after the hour', () =>
      gh.comments(WIDGET, issue.number).find((c) => c.user?.login === BOT && c.body?.includes('destroying')),
    );
    await waitFor('the thopter destroyed', async () => (await hub.store.state(t.id)) === 'destroyed');
    const deletes = gh.requests
      .slice(before)
      .filter((r) => r.method === 'DELETE' && r.path === '/installation/token');
    assert.ok(
      deletes.some((r) => r.status === 204),
      JSON.stringify(deletes),
    );
    assert.deepEqual(live(), [], 'a token of the thopter still works after its teardown');
    // The finish line's pull request is opened by the App's bot.
    const pr = await waitFor('the pull request', () =>
      gh.pullRequests(WIDGET).find((p) => p.head.ref === branch),
    );
    assert.equal(pr.user?.login, BOT);

    // Never in the hub's log or in Redis (records, events, job data).
    const everything = logs.join('') + (await world.redisText());
    for (const x of gh.issuedTokens) assert.ok(!everything.includes(x.token), 'a token in the log or Redis');
    assert.ok(!everything.includes(privateKey.split('\n')[1]!), "the App's key in the log or Redis");
  });
});
