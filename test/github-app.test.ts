import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Hub } from '../src/hub.js';
import { loadConfig, ConfigError } from '../src/config.js';
import { deliverWebhook, startFakeGitHub, type FakeGitHub } from './fakes/github.js';
import { api, TestWorld, writeFixture } from './helpers/env.js';
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
let gh: FakeGitHub;
let git: GitHttpServer;
let hub: Hub;
const logs: string[] = [];
let installation: number;

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
  hub = await world.hub(
    {
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
