import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Hub } from '../src/hub.js';
import { createLogger } from '../src/log.js';
import { LocalProvider } from '../src/providers/local/provider.js';
import { api, TestWorld } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

/*
 * A thopter on a provider the hub does not observe (as on Fly: `hubObserves` is false, so its
 * observer posts the session) whose observer goes silent. The provider is the local one, told to
 * leave observing to an observer; the test plays that observer through the real status endpoint.
 */

const world = new TestWorld();
let hub: Hub;
let origin: string;

before(async () => {
  await world.start();
  origin = world.origin();
  const config = world.config();
  const provider = new LocalProvider(config.dataDir, createLogger('silent'));
  Object.defineProperty(provider, 'hubObserves', { value: false });
  hub = await world.hub({ THOPTER_IDLE_TIMEOUT: '40s' }, undefined, { provider });
});
after(() => world.close());

const view = async (id: string) => (await api(hub.url, 'GET', `/api/thopters/${id}`)).body;

describe('a thopter whose observer goes silent', () => {
  it('shows its session unknown, and the idle timeout ends it counting from the last change seen', async () => {
    const launched = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title: 'Go quiet' });
    assert.equal(launched.status, 202);
    const id = launched.body.id as string;
    const running = await waitFor('running', async () => {
      const t = await view(id);
      return t.state === 'running' && t;
    });
    const machine = path.join(world.dir, 'data', 'thopters', running.machine.id);
    // The token the machine got, where its observer reads it.
    const token = readFileSync(path.join(machine, 'home', '.thopter', 'status-token'), 'utf8');
    const post = (screen: string) =>
      api(
        hub.url,
        'POST',
        `/api/thopters/${id}/status`,
        {
          thopterId: id,
          tmuxState: 'active',
          claudeProcess: 'running',
          screenDump: screen,
          lastActivity: new Date().toISOString(),
          spawnedAt: running.runningAt,
        },
        token,
      );
    assert.equal((await post('thinking…')).status, 204);
    assert.equal((await post('thinking… still')).status, 204);
    const active = (await view(id)).session;
    assert.equal(active.state, 'active');
    assert.equal(active.source, 'observer');

    // The observer stops posting: its last word was "active".
    const unknown = await waitFor(
      'the session shown unknown',
      async () => {
        const t = await view(id);
        return t.state === 'running' && t.session?.state === 'unknown' && t.session;
      },
      { timeoutMs: 60_000 },
    );
    assert.equal(unknown.source, 'hub');
    assert.equal(unknown.silentSince, active.updatedAt, 'silent since its last post');
    assert.match(unknown.screen, /agent: pushed/, 'the hub read the screen of the machine itself');
    const page = await fetch(`${hub.url}/thopters/${id}`, {
      headers: { authorization: `Bearer ${world.env().HUB_API_TOKEN}` },
    });
    const html = await page.text();
    assert.match(html, /<span class="badge unknown">unknown<\/span>/);
    assert.match(html, /its observer has been silent since/);

    const ended = await waitFor(
      'the idle timeout to end it',
      async () => {
        const t = await view(id);
        return t.state === 'destroyed' && t;
      },
      { timeoutMs: 120_000 },
    );
    assert.match(
      ended.endReason,
      new RegExp(
        `^idle for \\d+ s \\(THOPTER_IDLE_TIMEOUT; its observer silent since ${active.updatedAt}\\)$`,
      ),
    );
    const quietS = Number(/idle for (\d+) s/.exec(ended.endReason)![1]);
    assert.ok(quietS >= 40, `idle counted from the last change seen (${quietS} s)`);
    assert.ok(!existsSync(machine), 'the machine is gone');
  });
});
