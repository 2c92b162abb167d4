import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { api, TestWorld, writeFixture } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

const world = new TestWorld();
let origin: string;

before(async () => {
  await world.start();
  origin = world.origin();
});
after(() => world.close());

const until = (url: string, id: string, pred: (t: any) => boolean, what: string) =>
  waitFor(what, async () => {
    const t = (await api(url, 'GET', `/api/thopters/${id}`)).body;
    return pred(t) ? t : undefined;
  });

describe('supervision', () => {
  it('shows a session active, then idle, and THOPTER_IDLE_TIMEOUT destroys it with the reason', async () => {
    const hub = await world.hub({ THOPTER_IDLE_AFTER: '1s', THOPTER_IDLE_TIMEOUT: '3s' });
    const { body } = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title: 'idle' });
    const active = await until(hub.url, body.id, (t) => t.session?.state === 'active', 'an active session');
    assert.equal(active.state, 'running');
    const idle = await until(hub.url, body.id, (t) => t.session?.state === 'idle', 'an idle session');
    assert.ok(idle.session.idleSince, 'idleSince is set');
    const gone = await until(hub.url, body.id, (t) => t.state === 'destroyed', 'destroyed');
    assert.match(gone.endReason, /^idle for \d+ s \(THOPTER_IDLE_TIMEOUT\)$/);
    assert.equal(existsSync(path.join(world.dir, 'data', 'thopters', gone.machine.id)), false);
    await world.stopHub(hub);
  });

  it('destroys a thopter alive longer than THOPTER_MAX_LIFETIME', async () => {
    const hub = await world.hub({ THOPTER_MAX_LIFETIME: '2s' });
    const { body } = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title: 'short life' });
    const gone = await until(hub.url, body.id, (t) => t.state === 'destroyed', 'destroyed');
    assert.match(gone.endReason, /^alive for \d+ s \(THOPTER_MAX_LIFETIME\)$/);
    assert.ok(gone.runningAt, 'it ran first');
    await world.stopHub(hub);
  });

  it('closes the record of a thopter whose machine disappeared', async () => {
    const hub = await world.hub();
    const { body } = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title: 'vanishing' });
    const running = await until(hub.url, body.id, (t) => t.state === 'running', 'running');
    await hub.provider.destroy(running.machine.id); // someone removed it behind the hub's back
    const gone = await until(hub.url, body.id, (t) => t.state === 'destroyed', 'destroyed');
    assert.equal(gone.endReason, 'the machine disappeared');
    await world.stopHub(hub);
  });
});

describe('reconciliation', () => {
  it('destroys, at start, a machine that no live thopter owns', async () => {
    const hub = await world.hub();
    const orphan = await hub.provider.create({
      id: 'feedf00d',
      thopterId: 'thopter-000000000000',
      statusToken: 'x',
      requestId: 'thopter-000000000000',
      repository: 'acme/widget',
      git: { userName: 'Thopter', userEmail: 'thopter@localhost' },
    });
    await world.stopHub(hub);
    const dir = path.join(world.dir, 'data', 'thopters', orphan.id);
    assert.equal(existsSync(dir), true);
    const next = await world.hub();
    assert.equal(existsSync(dir), false, 'the orphan machine was destroyed');
    await world.stopHub(next);
  });
});

describe('golden claudes (local)', () => {
  it("copies the golden claude's home into the thopter, without .bashrc and .claude/projects", async () => {
    const gc = path.join(world.dir, 'data', 'golden', 'reviewer');
    writeFixture(path.join(gc, '.claude'), 'settings.json', '{"theme":"dark"}');
    writeFixture(path.join(gc, '.claude', 'projects', 'old'), 'session.jsonl', '{}');
    writeFixture(gc, '.claude.json', '{"logged":"in"}');
    writeFixture(gc, '.bashrc', 'echo golden bashrc\n');
    const hub = await world.hub();
    const { body, status } = await api(hub.url, 'POST', '/api/thopters', {
      repository: origin,
      title: 'gc',
      gc: 'reviewer',
    });
    assert.equal(status, 202, JSON.stringify(body));
    const t = await until(hub.url, body.id, (x) => x.state === 'running', 'running');
    const copy = t.phases.find((p: any) => p.name === 'copy-golden');
    assert.equal(copy.outcome, 'succeeded', copy.error);
    const home = path.join(world.dir, 'data', 'thopters', t.machine.id, 'home');
    assert.equal(readFileSync(path.join(home, '.claude', 'settings.json'), 'utf8'), '{"theme":"dark"}');
    assert.equal(readFileSync(path.join(home, '.claude.json'), 'utf8'), '{"logged":"in"}');
    assert.equal(existsSync(path.join(home, '.claude', 'projects')), false);
    assert.doesNotMatch(readFileSync(path.join(home, '.bashrc'), 'utf8'), /golden/);
    await api(hub.url, 'DELETE', `/api/thopters/${body.id}`);
    await until(hub.url, body.id, (x) => x.state === 'destroyed', 'destroyed');
    await world.stopHub(hub);
  });
});
