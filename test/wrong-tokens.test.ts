import assert from 'node:assert/strict';
import { Agent, request as httpRequest } from 'node:http';
import { after, before, describe, it } from 'node:test';
import type { Hub } from '../src/hub.js';
import { TestWorld, TOKEN } from './helpers/env.js';

const world = new TestWorld();

before(() => world.start());
after(() => world.close());

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/**
 * One HTTP request from a chosen loopback address: the hub sees 127.0.0.2 and 127.0.0.1 as two
 * clients, as it would two machines.
 */
function send(
  url: string,
  opts: { from?: string; method?: string; path: string; headers?: Record<string, string>; body?: string },
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      `${url}${opts.path}`,
      { method: opts.method ?? 'GET', headers: opts.headers, localAddress: opts.from ?? '127.0.0.1' },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode!, headers: res.headers, body }));
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

const bearer = (url: string, token: string, from: string) =>
  send(url, { from, path: '/api/thopters', headers: { authorization: `Bearer ${token}` } });

const signIn = (url: string, token: string, from: string) =>
  send(url, {
    from,
    method: 'POST',
    path: '/login',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ token, next: '/' }).toString(),
  });

const retryAfter = (a: Answer) => {
  const seconds = Number(a.headers['retry-after']);
  assert.ok(
    Number.isInteger(seconds) && seconds >= 1 && seconds <= 60,
    `Retry-After: ${a.headers['retry-after']}`,
  );
  return seconds;
};

describe('wrong tokens are limited per client address and overall', () => {
  // Three wrong tokens a minute from one address, five from all.
  const limited = (prefix: string) => world.hub({ HUB_REDIS_PREFIX: prefix, HUB_AUTH_FAILURE_LIMIT: '3:5' });

  it('answers 429 with Retry-After to an address that guessed too often, on every hub; another address signs in', async () => {
    // Two hubs sharing one Redis: guesses spread over them count together.
    const [a, b] = [await limited('limit-a'), await limited('limit-a')];
    for (const hub of [a, a, b]) {
      const wrong = await bearer(hub.url, 'a-wrong-guess-0f3e9d1c7b', '127.0.0.2');
      assert.equal(wrong.status, 401, wrong.body);
    }
    for (const hub of [a, b]) {
      const held = await bearer(hub.url, 'a-wrong-guess-0f3e9d1c7b', '127.0.0.2');
      assert.equal(held.status, 429, held.body);
      retryAfter(held);
      assert.match(
        JSON.parse(held.body).error.message,
        /too many wrong tokens from this address: try again in \d+ s/,
      );
      // A right guess is held like a wrong one: the answer tells the guesser nothing.
      assert.equal((await bearer(hub.url, TOKEN, '127.0.0.2')).status, 429);
      // The same address cannot switch to the sign-in form either.
      assert.equal((await signIn(hub.url, TOKEN, '127.0.0.2')).status, 429);
      // Another address with the right token is not affected.
      const other = await bearer(hub.url, TOKEN, '127.0.0.1');
      assert.equal(other.status, 200, other.body);
    }
    await world.stopHub(a);
    await world.stopHub(b);
  });

  it('answers 429 to wrong sign-ins at /login, with the sign-in page and Retry-After', async () => {
    const hub = await limited('limit-b');
    for (let i = 0; i < 3; i++) {
      const wrong = await signIn(hub.url, 'a-wrong-guess-0f3e9d1c7b', '127.0.0.3');
      assert.equal(wrong.status, 401);
      assert.match(wrong.body, /That is not the hub’s token/);
    }
    const held = await signIn(hub.url, TOKEN, '127.0.0.3');
    assert.equal(held.status, 429);
    retryAfter(held);
    assert.match(held.body, /Too many wrong tokens from this address: try again in \d+ seconds/);
    assert.equal(held.headers['set-cookie'], undefined, 'no session for a held address');
    const other = await signIn(hub.url, TOKEN, '127.0.0.1');
    assert.equal(other.status, 303, 'another address signs in');
    assert.match(String(other.headers['set-cookie']), /thopter_session=/);
    await world.stopHub(hub);
  });

  it('lets no more wrong tokens through than the limit, however many are sent at once', async () => {
    const hub = await limited('limit-d');
    // Thirty connections opened (and used once with the right token) first, then thirty guesses
    // sent on them at once: the hub decides on all of them together.
    const agent = new Agent({ keepAlive: true, maxSockets: 30, localAddress: '127.0.0.9' });
    const get = (token: string) =>
      new Promise<number>((resolve, reject) => {
        const req = httpRequest(
          `${hub.url}/api/thopters`,
          { agent, headers: { authorization: `Bearer ${token}` } },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode!));
          },
        );
        req.on('error', reject);
        req.end();
      });
    const warm = await Promise.all(Array.from({ length: 30 }, () => get(TOKEN)));
    assert.deepEqual(new Set(warm), new Set([200]));
    const statuses = await Promise.all(Array.from({ length: 30 }, () => get('a-wrong-guess-0f3e9d1c7b')));
    agent.destroy();
    const count = (status: number) => statuses.filter((s) => s === status).length;
    assert.deepEqual([count(401), count(429)], [3, 27], statuses.join(' '));
    await world.stopHub(hub);
  });

  it('once the total is spent, holds every address that guessed, and only those', async () => {
    const hub = await limited('limit-c');
    for (const from of ['127.0.0.4', '127.0.0.4', '127.0.0.5', '127.0.0.5', '127.0.0.6']) {
      assert.equal((await bearer(hub.url, 'a-wrong-guess-0f3e9d1c7b', from)).status, 401);
    }
    // Five wrong in all: each of those addresses is held, though none reached three.
    for (const from of ['127.0.0.4', '127.0.0.5', '127.0.0.6']) {
      const held = await bearer(hub.url, TOKEN, from);
      assert.equal(held.status, 429, from);
      retryAfter(held);
    }
    // A new address gets one guess, then is held as well.
    assert.equal((await bearer(hub.url, 'a-wrong-guess-0f3e9d1c7b', '127.0.0.7')).status, 401);
    assert.equal((await bearer(hub.url, TOKEN, '127.0.0.7')).status, 429);
    // An address that never guessed wrong keeps working.
    assert.equal((await bearer(hub.url, TOKEN, '127.0.0.8')).status, 200);
    assert.equal((await bearer(hub.url, TOKEN, '127.0.0.1')).status, 200);
    await world.stopHub(hub);
  });
});

describe('a malformed session cookie is no session', () => {
  let hub: Hub;
  before(async () => {
    hub = await world.hub({ HUB_REDIS_PREFIX: 'cookie' });
  });
  after(() => world.stopHub(hub));
  const cookie = 'thopter_session=%E0%A4%A';

  it('refuses a terminal websocket with 401, not 500', async () => {
    const answer = await new Promise<number>((resolve, reject) => {
      const req = httpRequest(`${hub.url}/thopters/thopter-0123456789ab/terminal/ws`, {
        headers: {
          connection: 'Upgrade',
          upgrade: 'websocket',
          'sec-websocket-version': '13',
          'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
          origin: hub.url,
          cookie,
        },
      });
      req.on('response', (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('upgrade', () => reject(new Error('the websocket was opened')));
      req.on('error', reject);
      req.end();
    });
    assert.equal(answer, 401);
  });

  it('refuses an HTTP request with 401 (or the sign-in page), not 500', async () => {
    const json = await send(hub.url, {
      path: '/api/thopters',
      headers: { cookie, accept: 'application/json' },
    });
    assert.equal(json.status, 401, json.body);
    const page = await send(hub.url, { path: '/', headers: { cookie, accept: 'text/html' } });
    assert.equal(page.status, 302);
    assert.match(String(page.headers.location), /^\/login\?next=/);
  });
});
