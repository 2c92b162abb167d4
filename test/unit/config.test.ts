import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, DEFAULT_AGENT_COMMAND, loadConfig, parseDuration } from '../../src/config.js';

const problems = (env: Record<string, string>) => {
  try {
    loadConfig(env);
  } catch (err) {
    assert.ok(err instanceof ConfigError);
    return err.problems.join('\n');
  }
  assert.fail('the configuration was accepted');
};

describe('loadConfig', () => {
  it('gives the documented defaults for an empty environment', () => {
    const c = loadConfig({});
    assert.equal(c.maxThopters, 10);
    assert.equal(c.provider, 'local');
    assert.equal(c.port, 8080);
    assert.equal(c.host, '127.0.0.1');
    assert.equal(c.redisUrl, undefined);
    assert.equal(c.agentCommand, DEFAULT_AGENT_COMMAND);
    assert.equal(c.idleTimeoutMs, undefined);
    assert.equal(c.maxLifetimeMs, undefined);
    assert.equal(c.idleAfterMs, 60_000);
    assert.equal(c.statusIntervalMs, 3000);
    assert.equal(c.requestTimeoutMs, 30_000);
    assert.equal(c.agentSettleMs, 3000);
    assert.match(c.dataDir, /\/data$/);
  });

  it('keeps failed machines only when asked, for THOPTER_KEEP_FAILED_TIMEOUT (2h by default)', () => {
    assert.equal(loadConfig({}).keepFailedMs, undefined);
    assert.equal(loadConfig({ THOPTER_KEEP_FAILED: '1' }).keepFailedMs, 2 * 3_600_000);
    assert.equal(
      loadConfig({ THOPTER_KEEP_FAILED: 'true', THOPTER_KEEP_FAILED_TIMEOUT: '30m' }).keepFailedMs,
      30 * 60_000,
    );
    assert.match(problems({ THOPTER_KEEP_FAILED: 'yes' }), /THOPTER_KEEP_FAILED/);
    assert.match(problems({ THOPTER_KEEP_FAILED_TIMEOUT: '0' }), /THOPTER_KEEP_FAILED_TIMEOUT.*positive/);
  });

  it('bounds the save before a teardown by THOPTER_SAVE_TIMEOUT: 60s by default, and at most', () => {
    assert.equal(loadConfig({}).saveTimeoutMs, 60_000);
    assert.equal(loadConfig({ THOPTER_SAVE_TIMEOUT: '5s' }).saveTimeoutMs, 5000);
    assert.match(problems({ THOPTER_SAVE_TIMEOUT: '2m' }), /THOPTER_SAVE_TIMEOUT.*at most 60s/);
    assert.match(problems({ THOPTER_SAVE_TIMEOUT: '0' }), /THOPTER_SAVE_TIMEOUT.*positive/);
  });

  it('takes only http(s) URLs for the hub, GitHub and Fly', () => {
    const text = problems({
      HUB_PUBLIC_URL: 'https://hub example.com',
      GITHUB_API_URL: 'file:///etc/passwd',
      HUB_STATUS_URL: 'http://',
      FLY_API_URL: 'data:text/plain,x',
      HUB_REQUEST_TIMEOUT: '0',
    });
    assert.match(text, /HUB_PUBLIC_URL must be an http:\/\/ or https:\/\/ URL/);
    assert.match(text, /GITHUB_API_URL must be an http\(s\) URL/);
    assert.match(text, /HUB_STATUS_URL must be an http\(s\) URL/);
    assert.match(text, /FLY_API_URL must be an http\(s\) URL/);
    assert.match(text, /HUB_REQUEST_TIMEOUT must be a positive duration/);
  });

  it('treats an empty variable as unset', () => {
    assert.equal(loadConfig({ REDIS_URL: '', MAX_THOPTERS: '' }).maxThopters, 10);
  });

  it('names each bad variable, what was wrong and where to fix it', () => {
    const text = problems({
      MAX_THOPTERS: '0',
      HUB_PORT: 'http',
      THOPTER_IDLE_TIMEOUT: 'soon',
      REDIS_URL: 'localhost:6379',
      THOPTER_AGENT_SETTLE: '0',
    });
    assert.match(text, /MAX_THOPTERS must be a whole number from 1 to 10000 \(got "0"\): set it in \.env/);
    assert.match(text, /HUB_PORT must be a whole number/);
    assert.match(text, /THOPTER_IDLE_TIMEOUT "soon" is not a duration: write it like 90s, 30m/);
    assert.match(text, /REDIS_URL must start with redis:\/\//);
    assert.match(text, /THOPTER_AGENT_SETTLE must be a positive duration/);
    assert.doesNotMatch(text, /localhost:6379/, 'a URL may hold a password: it is not echoed');
  });

  it('names what the fly provider needs, without echoing the token', () => {
    const text = problems({ THOPTER_PROVIDER: 'fly', THOPTER_VM_SIZE: 'huge' });
    assert.match(
      text,
      /FLY_API_TOKEN is needed with THOPTER_PROVIDER=fly: create one with `fly tokens create deploy/,
    );
    assert.match(text, /APP_NAME is needed/);
    assert.match(text, /REGION is needed/);
    assert.match(text, /THOPTER_VM_SIZE must be one of shared-cpu-1x, .*performance-16x \(got "huge"\)/);
    assert.match(problems({ THOPTER_PROVIDER: 'aws' }), /THOPTER_PROVIDER must be one of local, fly/);
    const ok = loadConfig({
      THOPTER_PROVIDER: 'fly',
      FLY_DEPLOY_KEY: 'FlyV1 fm2_secret',
      APP_NAME: 'my-thopters',
      REGION: 'ord',
      THOPTER_VM_SIZE: 'shared-cpu-2x',
      THOPTER_VM_MEMORY: '2048',
    });
    assert.equal(ok.fly.token, 'FlyV1 fm2_secret', "the seed's FLY_DEPLOY_KEY is accepted");
    assert.deepEqual(ok.fly.guest, { cpu_kind: 'shared', cpus: 2, memory_mb: 2048 });
    assert.equal(ok.fly.sshHost, '{id}.vm.{app}.internal');
    assert.doesNotMatch(
      problems({ THOPTER_PROVIDER: 'fly', FLY_API_TOKEN: 'x', APP_NAME: 'Bad App' }),
      /"x"/,
    );
  });

  it('checks GITHUB_INTEGRATION_JSON and never echoes it', () => {
    const text = problems({
      GITHUB_INTEGRATION_JSON: '{"repositories": {"not a repo": {"issuesPAT": "ghp_SECRET"}}}',
    });
    assert.match(text, /GITHUB_INTEGRATION_JSON must look like/);
    assert.doesNotMatch(text, /ghp_SECRET/);
    const ok = loadConfig({
      GITHUB_INTEGRATION_JSON: '{"repositories": {"acme/widget": {"agentCoderPAT": "x", "userName": "Bot"}}}',
    });
    assert.equal(ok.repositories['acme/widget']?.userName, 'Bot');
  });

  it('refuses files that do not exist', () => {
    assert.match(
      problems({ THOPTER_ENV_FILE: '/no/such/file' }),
      /THOPTER_ENV_FILE names a file that does not exist/,
    );
  });

  it('refuses a short HUB_API_TOKEN without printing it', () => {
    const text = problems({ HUB_API_TOKEN: 'short' });
    assert.match(text, /HUB_API_TOKEN is too short \(5 characters\): use at least 20/);
    assert.doesNotMatch(text, /"short"/);
  });

  it('refuses a weak HUB_API_TOKEN, saying how to make a strong one', () => {
    for (const [weak, why] of [
      ['0123456789abcdef012', /too short \(19 characters\)/],
      ['x'.repeat(40), /repeats a few characters/],
      ['abababababababababababab', /repeats a few characters/],
      ['123123123123123123123123', /repeats a few characters/],
      ['password1234567890!', /too short/],
      ['password-1234567890-xyz', /common words/],
      ['MySuperChangeMe-2024-ok!', /common words/],
      ['secret-token-secret-token', /common words/],
      ['Admin_Token_2024_09_17_#1', /common words/],
      ['test-hub-token-0123456789', /common words/],
    ] as const) {
      const text = problems({ HUB_API_TOKEN: weak });
      assert.match(text, why, weak);
      assert.match(text, /HUB_API_TOKEN .*make one with `openssl rand -hex 32`/, weak);
      assert.ok(!text.includes(weak), 'the token is not echoed');
    }
    for (const strong of [
      'c3f1a9e07b5d42c8e6a1f0b9d7',
      '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08',
      'hubtoken-SECRET-4b1d9a7c2e',
      'correct horse battery staple',
    ]) {
      assert.equal(loadConfig({ HUB_API_TOKEN: strong }).apiToken, strong);
    }
  });

  it('reads HUB_AUTH_FAILURE_LIMIT, and refuses a malformed one', () => {
    assert.deepEqual(loadConfig({}).authFailureLimit, { perAddress: 10, total: 200 });
    assert.deepEqual(loadConfig({ HUB_AUTH_FAILURE_LIMIT: '3:5' }).authFailureLimit, {
      perAddress: 3,
      total: 5,
    });
    for (const bad of ['10', '0:5', 'ten:5', '5:0']) {
      assert.match(
        problems({ HUB_AUTH_FAILURE_LIMIT: bad }),
        /HUB_AUTH_FAILURE_LIMIT must be PER_ADDRESS:TOTAL/,
      );
    }
  });

  it('reads THOPTER_LOCAL_REPOSITORIES: absolute folders separated by : or ,', () => {
    assert.deepEqual(loadConfig({}).localRepositories, []);
    assert.deepEqual(loadConfig({ THOPTER_LOCAL_REPOSITORIES: '/tmp:/, /usr' }).localRepositories, [
      '/tmp',
      '/',
      '/usr',
    ]);
    for (const bad of ['relative/dir', '/no/such/folder', '/etc/hostname']) {
      assert.match(
        problems({ THOPTER_LOCAL_REPOSITORIES: `/tmp:${bad}` }),
        /THOPTER_LOCAL_REPOSITORIES names ".*", which is not an absolute path of a folder/,
        bad,
      );
    }
  });
});

describe('parseDuration', () => {
  it('reads seconds, minutes, hours, days, and off', () => {
    assert.equal(parseDuration('90'), 90_000);
    assert.equal(parseDuration('90s'), 90_000);
    assert.equal(parseDuration('30m'), 1_800_000);
    assert.equal(parseDuration('2h'), 7_200_000);
    assert.equal(parseDuration('1d'), 86_400_000);
    assert.equal(parseDuration('250ms'), 250);
    assert.equal(parseDuration('0'), undefined);
    assert.equal(parseDuration('off'), undefined);
    assert.ok(parseDuration('ten minutes') instanceof Error);
  });
});
