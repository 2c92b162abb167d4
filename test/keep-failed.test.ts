import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';
import { WebSocket } from 'ws';
import type { Hub } from '../src/hub.js';
import { api, TestWorld, TOKEN, writeFixture } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

/*
 * THOPTER_KEEP_FAILED on the local provider: a thopter whose clone fails (the repository is a
 * folder without git) keeps its machine, with a working terminal, until killed or timed out.
 */

const world = new TestWorld();
let origin: string;
let notARepo: string;

before(async () => {
  await world.start();
  origin = world.origin();
  notARepo = path.join(world.dir, 'not-a-repo');
  writeFixture(notARepo, 'file.txt', 'no git here');
});
after(() => world.close());

const view = async (hub: Hub, id: string) => (await api(hub.url, 'GET', `/api/thopters/${id}`)).body;
const until = (hub: Hub, id: string, state: string) =>
  waitFor(
    `thopter ${id} to be ${state}`,
    async () => {
      const t = await view(hub, id);
      return t.state === state && t;
    },
    { timeoutMs: 120_000 },
  );
const launch = async (hub: Hub, title: string, repository: string) => {
  const res = await api(hub.url, 'POST', '/api/thopters', { repository, title });
  assert.equal(res.status, 202, JSON.stringify(res.body));
  return res.body.id as string;
};
const machineDir = (t: { machine: { id: string } }) => path.join(world.dir, 'data', 'thopters', t.machine.id);

describe('THOPTER_KEEP_FAILED', () => {
  it('keeps a failed thopter’s machine, terminal working and counted in MAX_THOPTERS, until it is killed', async () => {
    const hub = await world.hub({
      MAX_THOPTERS: '1',
      THOPTER_KEEP_FAILED: '1',
      THOPTER_KEEP_FAILED_TIMEOUT: '1h',
    });
    const failing = await launch(hub, 'Clone the impossible', notARepo);
    const kept = await until(hub, failing, 'kept');
    assert.match(kept.kept.reason, /^clone-repo failed: /);
    assert.ok(Date.parse(kept.kept.until) > Date.now() + 50 * 60_000, 'kept for the hour asked');
    assert.ok(existsSync(machineDir(kept)), 'the machine is there');

    // Its machine lives, so it holds the only slot: the next launch waits in line.
    const next = await launch(hub, 'Wait for the slot', origin);
    assert.equal((await view(hub, next)).state, 'queued');

    // The dashboard shows it failed-and-kept, with its failure and a terminal that works.
    const page = await (
      await fetch(`${hub.url}/thopters/${failing}`, { headers: { authorization: `Bearer ${TOKEN}` } })
    ).text();
    assert.match(page, /<span class="badge kept">failed, kept<\/span>/);
    assert.match(page, /clone-repo failed: .*The machine is kept for a look until/s);
    assert.match(page, new RegExp(`href="/thopters/${failing}/terminal"`));
    const login = await fetch(`${hub.url}/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: hub.url },
      body: new URLSearchParams({ token: TOKEN, next: '/' }).toString(),
      redirect: 'manual',
    });
    const cookie = login.headers.get('set-cookie')!.split(';')[0]!;
    // The main page, as a browser draws it from the live feed.
    const browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: ['--no-sandbox'],
    });
    try {
      const context = await browser.newContext();
      const [name, value] = [cookie.slice(0, cookie.indexOf('=')), cookie.slice(cookie.indexOf('=') + 1)];
      await context.addCookies([{ name, value, url: hub.url }]);
      const main = await context.newPage();
      await main.goto(`${hub.url}/`);
      const card = main.locator(`#thopters article[data-id="${failing}"]`);
      await card.waitFor();
      assert.equal(await card.locator('.badge').innerText(), 'FAILED, KEPT');
      assert.match(
        await card.locator('.facts').innerText(),
        /failed: clone-repo failed: .*machine kept until/s,
      );
      assert.equal(await card.getByRole('link', { name: 'Terminal' }).count(), 1);
      assert.equal(await card.getByRole('button', { name: 'Kill' }).count(), 1);
    } finally {
      await browser.close();
    }
    const ws = new WebSocket(`${hub.url.replace(/^http/, 'ws')}/thopters/${failing}/terminal/ws`, {
      headers: { cookie, origin: hub.url },
    });
    const control: string[] = [];
    ws.on('message', (data, binary) => binary || control.push(data.toString()));
    try {
      await waitFor('the terminal to attach', () => control.some((m) => m.includes('"ready"')));
      ws.send(JSON.stringify({ type: 'input', data: 'echo looked-$((6*7))\r' }));
      await waitFor('the keys to run in the kept machine', async () =>
        (await hub.provider.snapshot(kept.machine.id)).screen.includes('looked-42'),
      );
    } finally {
      ws.close();
    }

    assert.equal((await api(hub.url, 'DELETE', `/api/thopters/${failing}`)).status, 202);
    const ended = await until(hub, failing, 'failed');
    assert.match(ended.endReason, /^clone-repo failed: .*; kept, then destroyed through the API$/s);
    assert.ok(!existsSync(machineDir(kept)), 'kill destroyed the machine');
    const started = await until(hub, next, 'running');
    assert.ok(
      started.startedAt >= ended.endedAt,
      'the next thopter got the slot only once the kept one ended',
    );

    await api(hub.url, 'DELETE', `/api/thopters/${next}`);
    await until(hub, next, 'destroyed');
    await world.stopHub(hub);
  });

  it('destroys a kept machine once THOPTER_KEEP_FAILED_TIMEOUT passes, saying why', async () => {
    const hub = await world.hub({ THOPTER_KEEP_FAILED: 'true', THOPTER_KEEP_FAILED_TIMEOUT: '3s' });
    const failing = await launch(hub, 'Clone the impossible, briefly', notARepo);
    const kept = await until(hub, failing, 'kept');
    const ended = await until(hub, failing, 'failed');
    assert.match(
      ended.endReason,
      new RegExp(
        `^clone-repo failed: .*; kept until ${kept.kept.until} \\(THOPTER_KEEP_FAILED_TIMEOUT\\)$`,
        's',
      ),
    );
    assert.ok(!existsSync(machineDir(kept)), 'the timeout destroyed the machine');
    assert.ok(
      ended.events.some((e: { type: string }) => e.type === 'kept'),
      'it was kept before',
    );
  });
});
