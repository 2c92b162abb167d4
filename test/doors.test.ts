import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { Hub } from '../src/hub.js';
import { api, TestWorld } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

const world = new TestWorld();
const SECRET = 'webhook-secret-for-doors';
/** Shaped like GitHub's header, but signing nothing: it passes the checks made before the body. */
const LOOKS_SIGNED = `sha256=${'0'.repeat(64)}`;
const logs: string[] = [];
let hub: Hub;
let origin: string;

before(async () => {
  await world.start();
  origin = world.origin();
  hub = await world.hub({ GITHUB_WEBHOOK_SECRET: SECRET, HUB_REQUEST_TIMEOUT: '5s' }, logs);
});
after(() => world.close());

/**
 * A raw HTTP/1.1 request that sends its headers and only the first `send` bytes of the body it
 * declares, then waits: whatever the hub answers before the rest arrives, it answered unread.
 */
class PartialRequest {
  readonly socket: Socket;
  received = '';
  closed = false;

  constructor(path: string, headers: Record<string, string>, declared: number, send: number) {
    const { port } = new URL(hub.url);
    this.socket = connect(Number(port), '127.0.0.1');
    this.socket.on('data', (d) => (this.received += d.toString('latin1')));
    this.socket.on('close', () => (this.closed = true));
    this.socket.on('error', () => {});
    const head = Object.entries({ host: `127.0.0.1:${port}`, 'content-length': String(declared), ...headers })
      .map(([k, v]) => `${k}: ${v}\r\n`)
      .join('');
    this.socket.write(`POST ${path} HTTP/1.1\r\n${head}\r\n`);
    if (send) this.socket.write('{'.padEnd(send, ' '));
  }

  /** The status line's code, once the hub has answered. */
  async status(what: string): Promise<number> {
    const line = await waitFor(what, () => /^HTTP\/1\.1 (\d{3})/.exec(this.received)?.[1], {
      timeoutMs: 30_000,
    });
    return Number(line);
  }

  /** Sends one more byte, as a slow client does; false once the hub has closed the connection. */
  trickle(): boolean {
    if (this.closed || this.socket.destroyed) return false;
    this.socket.write(' ');
    return true;
  }

  close() {
    this.socket.destroy();
  }
}

const webhook = (headers: Record<string, string>) => ({
  'content-type': 'application/json',
  'x-github-delivery': 'd-1',
  ...headers,
});

describe("the hub's doors", () => {
  it('refuses a webhook post without a signature or event before reading its body', async () => {
    const cases: Array<[string, Record<string, string>, number, number, RegExp]> = [
      [
        'no signature',
        { 'x-github-event': 'issues' },
        900_000,
        401,
        /X-Hub-Signature-256 is missing or malformed/,
      ],
      ['no event', { 'x-hub-signature-256': LOOKS_SIGNED }, 900_000, 400, /X-GitHub-Event is missing/],
      [
        'over the limit for issue events',
        { 'x-hub-signature-256': LOOKS_SIGNED, 'x-github-event': 'issues' },
        2 * 1024 * 1024,
        413,
        /over 1048576 bytes/,
      ],
      [
        'an event the hub does not act on',
        { 'x-hub-signature-256': LOOKS_SIGNED, 'x-github-event': 'push' },
        20 * 1024 * 1024,
        202,
        /ignored.*push/,
      ],
    ];
    for (const [what, headers, declared, status, body] of cases) {
      const req = new PartialRequest('/github/webhook', webhook(headers), declared, 100);
      assert.equal(await req.status(`the answer to ${what}`), status, what);
      await waitFor(`the body of the answer to ${what}`, () => body.test(req.received));
      assert.match(req.received, /connection: close/i, `${what}: the unread body is not drained`);
      await waitFor(`the hub to close the connection (${what})`, () => req.closed);
      req.close();
    }
  });

  it("refuses a status post with a wrong bearer before reading its body; the thopter's own works", async () => {
    const launched = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title: 'status' });
    const id = launched.body.id as string;
    await waitFor('it to run', async () => (await hub.store.state(id)) === 'running');
    const record = (await hub.store.get(id))!;
    const token = readFileSync(
      `${world.dir}/data/thopters/${record.machine!.id}/home/.thopter/status-token`,
      'utf8',
    ).trim();
    for (const bearer of ['forged-token-forged-token', hub.apiToken]) {
      const forged = new PartialRequest(
        `/api/thopters/${id}/status`,
        { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
        500_000,
        100,
      );
      assert.equal(await forged.status('the answer to a forged status post'), 401);
      await waitFor('the hub to close the connection', () => forged.closed);
      assert.match(forged.received, /this thopter's status token/);
      forged.close();
    }
    // Its own token is let through to the body, which is then read and checked.
    const own = new PartialRequest(
      `/api/thopters/${id}/status`,
      { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      20,
      2,
    );
    own.socket.write('x'.repeat(18));
    assert.equal(await own.status('the answer to a bad body with the right token'), 400);
    own.close();
    await api(hub.url, 'DELETE', `/api/thopters/${id}`);
    await waitFor('destroyed', async () => (await hub.store.state(id)) === 'destroyed');
  });

  it('reads at most 16 unverified deliveries at once; past that 503, and the API still answers', async () => {
    const signedLooking = webhook({ 'x-hub-signature-256': LOOKS_SIGNED, 'x-github-event': 'issues' });
    const held: PartialRequest[] = [];
    for (let i = 0; i < 16; i++) held.push(new PartialRequest('/github/webhook', signedLooking, 500_000, 10));
    // Each of the 16 is being read: none has an answer while its body is still coming.
    const extra = await waitFor('a post past the cap to be refused', async () => {
      const r = new PartialRequest('/github/webhook', signedLooking, 500_000, 10);
      const status = await r.status('an answer past the cap');
      r.close();
      return status === 503 ? r : undefined;
    });
    assert.match(extra.received, /retry-after: 1/i);
    assert.ok(
      held.every((r) => r.received === ''),
      'the 16 are still being read',
    );
    const list = await api(hub.url, 'GET', '/api/thopters');
    assert.equal(list.status, 200, 'an authenticated call answers meanwhile');
    // HUB_REQUEST_TIMEOUT (5 s here) cuts off the 16 slow senders and frees their places.
    for (const r of held) {
      await waitFor('a slow sender to be cut off', () => r.closed);
      assert.match(r.received, /^HTTP\/1\.1 408|^$/);
    }
    const after = new PartialRequest('/github/webhook', signedLooking, 2, 2);
    assert.equal(await after.status('a delivery once the places are free'), 401);
    assert.match(after.received, /does not match/);
    after.close();
  });

  it('cuts off a sender that trickles its body with a 408, while an authenticated call still answers', async () => {
    const slow = new PartialRequest(
      '/github/webhook',
      webhook({ 'x-hub-signature-256': LOOKS_SIGNED, 'x-github-event': 'issue_comment' }),
      100_000,
      10,
    );
    // One byte every 100 ms: never idle, so only the deadline on the whole request ends it.
    await waitFor('the slow sender to be cut off', () => !slow.trickle(), { timeoutMs: 60_000 });
    assert.match(slow.received, /^HTTP\/1\.1 408/);
    const list = await api(hub.url, 'GET', '/api/thopters');
    assert.equal(list.status, 200);
    slow.close();
  });

  it('closes the oldest unauthenticated connections past the cap; an authenticated one stays', async () => {
    const capped = await world.hub({ HUB_MAX_UNAUTHENTICATED_CONNECTIONS: '8', HUB_REQUEST_TIMEOUT: '60s' });
    const port = Number(new URL(capped.url).port);
    const open = async () => {
      const socket = connect(port, '127.0.0.1');
      const state = { socket, received: '', closed: false };
      socket.on('data', (d) => (state.received += d.toString('latin1')));
      socket.on('close', () => (state.closed = true));
      socket.on('error', () => {});
      await new Promise((r) => socket.once('connect', r));
      return state;
    };
    const get = `GET /api/thopters HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${capped.apiToken}\r\n\r\n`;
    // Responses follow each other on the connection: a JSON body ends without a newline.
    const answers = (s: { received: string }) => s.received.match(/HTTP\/1\.1 200 OK\r\n/g)?.length ?? 0;
    const member = await open();
    member.socket.write(get);
    await waitFor('the authenticated call to answer', () => answers(member) === 1);

    const idle: Array<Awaited<ReturnType<typeof open>>> = [];
    for (let i = 0; i < 20; i++) idle.push(await open());
    // 20 connections that say nothing, 8 allowed: the 12 oldest are closed, the 8 newest stay.
    await waitFor('the oldest idle connections to be closed', () => idle.slice(0, 12).every((s) => s.closed));
    assert.deepEqual(
      idle.slice(12).map((s) => s.closed),
      Array(8).fill(false),
    );
    member.socket.write(get);
    await waitFor('the authenticated connection to answer again', () => answers(member) === 2);
    assert.equal(member.closed, false);
    assert.equal((await api(capped.url, 'GET', '/api/thopters')).status, 200, 'a new client gets in');
    for (const s of [member, ...idle]) s.socket.destroy();
    await world.stopHub(capped);
  });

  it('logs a client that aborts mid-body at debug level, without a stack', async () => {
    // Expect: 100-continue makes Node answer "100 Continue" as it hands the request to the hub: the
    // abort then comes while the hub reads the body, not before the request reached it.
    const aborting = (path: string, headers: Record<string, string>) =>
      new PartialRequest(path, { ...headers, expect: '100-continue' }, 400_000, 0);
    const aborted = [
      aborting(
        '/github/webhook',
        webhook({ 'x-hub-signature-256': LOOKS_SIGNED, 'x-github-event': 'issues' }),
      ),
      aborting('/api/thopters', {
        authorization: `Bearer ${hub.apiToken}`,
        'content-type': 'application/json',
      }),
      aborting('/login', { 'content-type': 'application/x-www-form-urlencoded' }),
    ];
    logs.length = 0;
    for (const r of aborted) {
      await waitFor('the hub to take the request', () => r.received.startsWith('HTTP/1.1 100 Continue'));
      r.socket.write('{"title": "');
    }
    for (const r of aborted) r.close();
    const done = (path: string) =>
      logs.some((l) => l.includes('"msg":"request"') && l.includes(`"path":"${path}"`));
    await waitFor('the hub to log the three requests', () =>
      ['/github/webhook', '/api/thopters', '/login'].every(done),
    );
    const lines = logs.map((l) => JSON.parse(l) as { level: number; msg: string });
    assert.deepEqual(
      lines.filter((l) => l.level >= 50),
      [],
      'no error for a client going away',
    );
    assert.ok(!logs.some((l) => /stack/i.test(l)), 'no stack trace');
  });
});
