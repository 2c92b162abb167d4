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
    assert.equal(c.agentSettleMs, 3000);
    assert.match(c.dataDir, /\/data$/);
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
    assert.match(text, /HUB_API_TOKEN is too short/);
    assert.doesNotMatch(text, /"short"/);
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
