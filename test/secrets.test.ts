import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, it } from 'node:test';
import { AGENT, api, TestWorld } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

const world = new TestWorld();
const SECRETS = {
  HUB_API_TOKEN: 'hubtoken-SECRET-4b1d9a7c2e',
  issuesPAT: 'ghp_ISSUESSECRET1234567890abcdef',
  agentCoderPAT: 'ghp_CODERSECRET1234567890abcdef',
};
const saved = { ...process.env };

before(async () => {
  await world.start();
  // The hub process itself holds the secrets in its environment, as a real deployment does.
  Object.assign(process.env, {
    HUB_API_TOKEN: SECRETS.HUB_API_TOKEN,
    GITHUB_INTEGRATION_JSON: JSON.stringify({
      repositories: { 'acme/widget': { issuesPAT: SECRETS.issuesPAT, agentCoderPAT: SECRETS.agentCoderPAT } },
    }),
  });
});
after(async () => {
  process.env = saved;
  await world.close();
});

it('keeps secrets out of logs, job data, records, the agent environment, process arguments and git config', async () => {
  const logs: string[] = [];
  const origin = world.origin();
  const hub = await world.hub(
    {
      HUB_API_TOKEN: SECRETS.HUB_API_TOKEN,
      GITHUB_INTEGRATION_JSON: process.env.GITHUB_INTEGRATION_JSON!,
      // The agent records its whole environment before working.
      THOPTER_AGENT_COMMAND: `env > agent-env.txt; bash ${AGENT}`,
    },
    logs,
  );
  const res = await api(
    hub.url,
    'POST',
    '/api/thopters',
    { repository: origin, title: 'secret' },
    SECRETS.HUB_API_TOKEN,
  );
  assert.equal(res.status, 202);
  const id = res.body.id;
  const t = await waitFor('running with a pushed branch', async () => {
    const x = (await api(hub.url, 'GET', `/api/thopters/${id}`, undefined, SECRETS.HUB_API_TOKEN)).body;
    return x.state === 'running' && world.branches(origin).includes(x.workBranch) ? x : undefined;
  });
  // A request with a wrong token logs nothing secret either.
  await api(hub.url, 'GET', '/api/thopters', undefined, 'wrong-but-long-enough-token');

  const machine = path.join(world.dir, 'data', 'thopters', t.machine.id);
  const places = {
    logs: logs.join(''),
    'redis (records, events and all job data)': await world.redisText(),
    'agent environment': readFileSync(path.join(machine, 'home', 'workspace', 'agent-env.txt'), 'utf8'),
    'process arguments': execFileSync('ps', ['-eo', 'args'], { encoding: 'utf8' }),
    'git config': [
      path.join(machine, 'home', 'workspace', 'project', '.git', 'config'),
      path.join(machine, 'home', '.gitconfig'),
    ]
      .filter((f) => existsSync(f))
      .map((f) => readFileSync(f, 'utf8'))
      .join('\n'),
  };
  assert.ok(places.logs.length > 1000, 'the hub did log');
  assert.match(places['agent environment'], /^HOME=/m, 'the agent environment was captured');
  assert.match(places['git config'], /\[remote "origin"\]/, 'the clone config was read');
  for (const [where, text] of Object.entries(places)) {
    for (const [name, secret] of Object.entries(SECRETS)) {
      assert.ok(!text.includes(secret), `${name} leaked into ${where}`);
    }
  }
  assert.doesNotMatch(places['agent environment'], /GITHUB_INTEGRATION_JSON|HUB_API_TOKEN/);
  await api(hub.url, 'DELETE', `/api/thopters/${id}`, undefined, SECRETS.HUB_API_TOKEN);
  await waitFor('destroyed', async () => (await hub.store.state(id)) === 'destroyed');
});
