import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Hub } from '../src/hub.js';
import type { Request } from '../src/thopters/record.js';
import { hashToken } from '../src/thopters/store.js';
import { buildObserver } from '../thopter/observer/build.js';
import { api, TestWorld } from './helpers/env.js';
import { clearOfUtcMidnight, waitFor } from './helpers/wait.js';

/*
 * Usage on a provider the hub does not observe (Fly): the observer bundle reads the transcripts
 * in the machine as they grow and posts the totals; the hub records them. The thopter is a record
 * made the way the hub makes one, with no lifecycle job, as in observer.test.ts.
 */

const world = new TestWorld();
let hub: Hub;
let bundle: string;
let child: ChildProcess | undefined;

before(async () => {
  // what is posted is read back as today's.
  await clearOfUtcMidnight(60_000);
  await world.start();
  hub = await world.hub();
  bundle = await buildObserver(path.join(world.dir, 'observer.mjs'));
});
after(async () => {
  if (child && child.exitCode === null && child.signalCode === null) {
    const closed = new Promise((resolve) => child!.once('close', resolve));
    child.kill('SIGKILL');
    await closed;
  }
  await world.close();
});

const line = (id: string, usage: Record<string, number>, block: string) =>
  JSON.stringify({
    type: 'assistant',
    message: { id, model: 'claude-opus-5-5', content: [{ type: block }], usage },
  }) + '\n';

describe('usage from the observer', () => {
  it('posts the transcript totals as they grow, each message once, and the hub records them', async () => {
    const id = `thopter-${randomBytes(6).toString('hex')}`;
    const request: Request = {
      id,
      source: 'github',
      repository: 'acme/far',
      cloneUrl: 'https://github.com/acme/far.git',
      repoName: 'far',
      issue: { number: 7, title: 'far away', body: '', comments: [] },
      gc: 'default',
      prompt: 'default',
      priority: 10,
      requestedBy: 'bob',
      createdAt: new Date().toISOString(),
    };
    await hub.store.create(request);
    const token = randomBytes(32).toString('base64url');
    await hub.store.addTokenHash(id, hashToken(token));
    await hub.store.setState(id, 'running', 'runningAt');
    const home = path.join(world.dir, 'machine');
    const project = path.join(home, '.claude', 'projects', '-data-thopter-workspace');
    mkdirSync(project, { recursive: true });
    writeFileSync(path.join(home, 'status-token'), token, { mode: 0o600 });
    const transcript = path.join(project, 'session-a.jsonl');
    const first = {
      input_tokens: 300,
      output_tokens: 40,
      cache_read_input_tokens: 1000,
      cache_creation_input_tokens: 20,
    };
    writeFileSync(transcript, line('msg_1', first, 'text') + line('msg_1', first, 'tool_use'));

    child = spawn(process.execPath, [bundle], {
      env: {
        PATH: process.env.PATH!,
        HOME: home,
        THOPTER_ID: id,
        HUB_STATUS_URL: `${hub.url}/api/thopters/${id}/status`,
        OBSERVER_INTERVAL_MS: '200',
        OBSERVER_TOKEN_FILE: path.join(home, 'status-token'),
        OBSERVER_ISSUE_FILE: path.join(home, 'issue.json'),
        OBSERVER_TURNS_FILE: path.join(home, 'turns.log'),
        OBSERVER_TRANSCRIPTS_DIR: path.join(home, '.claude', 'projects'),
        OBSERVER_TMUX_SOCKET: path.join(home, 'no-tmux-here'),
        OBSERVER_AGENT_PROCESS: `claude-${randomBytes(3).toString('hex')}`,
      },
      stdio: 'ignore',
    });
    const usage = async () => (await api(hub.url, 'GET', `/api/thopters/${id}`)).body.usage;
    const u1 = await waitFor('the first usage', async () => (await usage()) ?? undefined);
    assert.deepEqual(u1.tokens, { input: 300, output: 40, cacheRead: 1000, cacheCreation: 20 });
    assert.equal(u1.messages, 1);

    // A second message, its line torn mid-write, then a new session file.
    const second = {
      input_tokens: 500,
      output_tokens: 60,
      cache_read_input_tokens: 0,
      cache_creation_input_tokens: 0,
    };
    const torn = line('msg_2', second, 'text');
    appendFileSync(transcript, torn.slice(0, 30));
    appendFileSync(transcript, torn.slice(30) + line('msg_2', second, 'tool_use'));
    writeFileSync(
      path.join(project, 'session-b.jsonl'),
      line('msg_3', { input_tokens: 7, output_tokens: 3 }, 'text'),
    );
    const u2 = await waitFor('the usage of three messages', async () => {
      const u = await usage();
      return u?.messages === 3 ? u : undefined;
    });
    assert.deepEqual(u2.tokens, { input: 807, output: 103, cacheRead: 1000, cacheCreation: 20 });
    assert.ok(Math.abs(u2.costUsd - (807 * 4 + 103 * 20 + 1000 * 0.2 + 20 * 5) / 1e6) < 1e-12);
    const summary = (await api(hub.url, 'GET', '/api/usage')).body;
    assert.deepEqual(summary.today.byPerson.bob.tokens, u2.tokens, 'posted again and again, counted once');
  });

  it('refuses a post whose usage is malformed, and records nothing of it', async () => {
    const id = `thopter-${randomBytes(6).toString('hex')}`;
    await hub.store.create({
      id,
      source: 'api',
      repository: 'acme/far',
      cloneUrl: '/x',
      repoName: 'far',
      issue: { title: 't', body: '', comments: [] },
      gc: 'default',
      prompt: 'default',
      priority: 10,
      requestedBy: 'api',
      createdAt: new Date().toISOString(),
    });
    const token = randomBytes(32).toString('base64url');
    await hub.store.addTokenHash(id, hashToken(token));
    const now = new Date().toISOString();
    const post = (usage: unknown) =>
      fetch(`${hub.url}/api/thopters/${id}/status`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({
          thopterId: id,
          tmuxState: 'active',
          claudeProcess: 'running',
          screenDump: '',
          lastActivity: now,
          spawnedAt: now,
          usage,
        }),
      });
    const bad = await post({
      'claude-opus-5-5': { input: -5, output: 1, cacheRead: 0, cacheCreation: 0, messages: 1 },
    });
    assert.equal(bad.status, 400);
    assert.match(JSON.stringify(await bad.json()), /usage/);
    assert.equal((await hub.store.get(id))?.usage, undefined);
    const good = await post({
      'claude-opus-5-5': { input: 5, output: 1, cacheRead: 0, cacheCreation: 0, messages: 1 },
    });
    assert.equal(good.status, 204);
    assert.equal((await hub.store.get(id))?.usage?.tokens.input, 5);
  });
});
