import assert from 'node:assert/strict';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import {
  deliverWebhook,
  secondaryRateLimit,
  signWebhook,
  startFakeGitHub,
  type FakeGitHub,
} from './fakes/github.js';
import { waitFor } from './helpers/wait.js';

const TOKEN = 'ghp_fake_hub_token_0123456789';
const T0 = Date.parse('2024-05-01T12:00:00Z');

/** The fake's clock: tests move it instead of waiting. */
let clock = T0;
let gh: FakeGitHub;

before(async () => {
  gh = await startFakeGitHub({ now: () => clock });
  gh.addToken(TOKEN, 'thopter-hub');
});

after(() => gh.close());

async function call(
  path: string,
  opts: { method?: string; token?: string | null; headers?: Record<string, string>; body?: unknown } = {},
) {
  const token = opts.token === undefined ? TOKEN : opts.token;
  const res = await fetch(path.startsWith('http') ? path : `${gh.url}${path}`, {
    method: opts.method ?? 'GET',
    headers: {
      accept: 'application/vnd.github+json',
      ...(token === null ? {} : { authorization: `token ${token}` }),
      ...(opts.body === undefined ? {} : { 'content-type': 'application/json' }),
      ...opts.headers,
    },
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, body: text ? JSON.parse(text) : null };
}

/** `<url>; rel="next", …` → {next: url, …} */
function links(header: string | null): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of (header ?? '').matchAll(/<([^>]+)>;\s*rel="([^"]+)"/g)) out[m[2]!] = m[1]!;
  return out;
}

describe('fake GitHub: issues', () => {
  it('pages through 250 issues 100 at a time by Link headers, returning each once', async () => {
    gh.addRepo('acme/big');
    for (let i = 0; i < 250; i++) gh.addIssue('acme/big', { title: `issue ${i}`, user: 'alice' });

    const pages: { size: number; rels: string[] }[] = [];
    const numbers: number[] = [];
    let next: string | undefined = '/repos/acme/big/issues?state=all&per_page=100';
    while (next) {
      const res = await call(next);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), 'application/json; charset=utf-8');
      const rel = links(res.headers.get('link'));
      pages.push({ size: res.body.length, rels: Object.keys(rel).sort() });
      numbers.push(...res.body.map((i: any) => i.number));
      for (const url of Object.values(rel)) {
        assert.match(url, new RegExp(`^${gh.url}/repositories/\\d+/issues\\?`), 'absolute, in GitHub’s form');
        assert.equal(new URL(url).searchParams.get('per_page'), '100', 'keeps per_page');
        assert.equal(new URL(url).searchParams.get('state'), 'all', 'keeps the other parameters');
      }
      if (rel.last) assert.equal(new URL(rel.last).searchParams.get('page'), '3');
      next = rel.next;
    }

    assert.deepEqual(pages, [
      { size: 100, rels: ['last', 'next'] },
      { size: 100, rels: ['first', 'last', 'next', 'prev'] },
      { size: 50, rels: ['first', 'prev'] },
    ]);
    assert.deepEqual(
      [...numbers].sort((a, b) => a - b),
      Array.from({ length: 250 }, (_, i) => i + 1),
    );
    assert.equal(numbers[0], 250, 'newest first by default');
  });

  it('sends no Link header when every issue fits on one page', async () => {
    gh.addRepo('acme/small');
    gh.addIssue('acme/small', { title: 'only', user: 'alice' });
    const res = await call('/repos/acme/small/issues');
    assert.equal(res.body.length, 1);
    assert.equal(res.headers.get('link'), null);
  });

  it('returns only issues updated at or after since', async () => {
    gh.addRepo('acme/since');
    const at = (s: number) => new Date(T0 + s * 1000).toISOString();
    gh.addIssue('acme/since', { title: 'old', user: 'alice', createdAt: at(0) });
    gh.addIssue('acme/since', { title: 'middle', user: 'alice', createdAt: at(10) });
    gh.addIssue('acme/since', { title: 'new', user: 'alice', createdAt: at(20) });
    gh.addComment('acme/since', 1, { body: '/thopter', user: 'bob', createdAt: at(30) });

    const titles = async (since: string) =>
      (await call(`/repos/acme/since/issues?since=${since}&sort=updated&direction=asc`)).body.map(
        (i: any) => i.title,
      );
    assert.deepEqual(await titles(at(10)), ['middle', 'new', 'old'], 'a comment makes the old issue updated');
    assert.deepEqual(await titles(at(20)), ['new', 'old'], 'at the exact second is included');
    assert.deepEqual(await titles(at(31)), []);
    assert.equal(
      gh.issue('acme/since', 1).updated_at,
      '2024-05-01T12:00:30Z',
      'whole seconds, as GitHub writes',
    );
  });

  it('lists pull requests with the issues, marked by pull_request', async () => {
    gh.addRepo('acme/prs');
    gh.addIssue('acme/prs', { title: 'a bug', user: 'alice' });
    gh.addIssue('acme/prs', { title: 'a fix', user: 'dependabot[bot]', pullRequest: true });

    const res = await call('/repos/acme/prs/issues');
    const byTitle = Object.fromEntries(res.body.map((i: any) => [i.title, i]));
    assert.equal(res.body.length, 2);
    assert.equal('pull_request' in byTitle['a bug'], false);
    assert.equal(byTitle['a fix'].number, 2, 'one numbering for issues and pull requests');
    assert.match(byTitle['a fix'].pull_request.url, /\/repos\/acme\/prs\/pulls\/2$/);
    assert.deepEqual(byTitle['a fix'].user.type, 'Bot');
    assert.deepEqual(byTitle['a bug'].user.type, 'User');
  });

  it('answers a missing issue with GitHub’s 404 body', async () => {
    gh.addRepo('acme/empty');
    const res = await call('/repos/acme/empty/issues/7');
    assert.equal(res.status, 404);
    assert.equal(res.body.message, 'Not Found');
    assert.match(res.body.documentation_url, /^https:\/\/docs\.github\.com\//);
  });

  it('tells a configured clone_url, or one under its own URL', async () => {
    gh.addRepo('acme/local', { cloneUrl: 'file:///tmp/origin.git' });
    gh.addRepo('acme/remote');
    assert.equal((await call('/repos/acme/local')).body.clone_url, 'file:///tmp/origin.git');
    const remote = (await call('/repos/acme/remote')).body;
    assert.equal(remote.clone_url, `${gh.url}/git/acme/remote.git`);
    assert.equal(remote.full_name, 'acme/remote');
    assert.equal(remote.default_branch, 'main');
  });
});

describe('fake GitHub: conditional requests and rate limits', () => {
  it('answers a matching If-None-Match with 304, no body and no rate-limit cost', async () => {
    gh.addRepo('acme/etag');
    gh.addIssue('acme/etag', { title: 'one', user: 'alice' });
    const first = await call('/repos/acme/etag/issues');
    const etag = first.headers.get('etag');
    assert.match(etag ?? '', /^W\/"[0-9a-f]+"$/);
    const used = gh.rateLimit(TOKEN).used;

    const again = await call('/repos/acme/etag/issues', { headers: { 'if-none-match': etag! } });
    assert.equal(again.status, 304);
    assert.equal(again.text, '');
    assert.equal(again.headers.get('x-ratelimit-remaining'), first.headers.get('x-ratelimit-remaining'));
    assert.equal(gh.rateLimit(TOKEN).used, used, 'a 304 is free');
    assert.equal(gh.requests.at(-1)?.cost, 0);

    gh.addComment('acme/etag', 1, { body: 'news', user: 'bob' });
    const changed = await call('/repos/acme/etag/issues', { headers: { 'if-none-match': etag! } });
    assert.equal(changed.status, 200);
    assert.notEqual(changed.headers.get('etag'), etag);
    assert.equal(gh.rateLimit(TOKEN).used, used + 1);
  });

  it('sends the rate-limit headers and answers an exhausted token with 403', async () => {
    gh.addToken('ghp_scarce', 'scarce');
    gh.setRateLimit('ghp_scarce', { remaining: 1 });
    const last = await call('/user', { token: 'ghp_scarce' });
    assert.equal(last.status, 200);
    assert.equal(last.body.login, 'scarce');
    assert.equal(last.headers.get('x-ratelimit-limit'), '5000');
    assert.equal(last.headers.get('x-ratelimit-remaining'), '0');
    assert.equal(last.headers.get('x-ratelimit-used'), '5000');
    assert.equal(last.headers.get('x-ratelimit-resource'), 'core');
    assert.equal(Number(last.headers.get('x-ratelimit-reset')), Math.floor(T0 / 1000) + 3600);

    const refused = await call('/user', { token: 'ghp_scarce' });
    assert.equal(refused.status, 403);
    assert.match(refused.body.message, /^API rate limit exceeded for user ID \d+/);
    assert.equal(refused.headers.get('x-ratelimit-remaining'), '0');

    const status = await call('/rate_limit', { token: 'ghp_scarce' });
    assert.equal(status.status, 200, 'GET /rate_limit costs nothing');
    assert.equal(status.body.resources.core.remaining, 0);
  });
});

describe('fake GitHub: faults', () => {
  it('fails the next request with an injected 500, then serves it', async () => {
    gh.addRepo('acme/flaky');
    gh.addIssue('acme/flaky', { title: 'one', user: 'alice' });
    const fault = gh.fail('GET /repos/acme/flaky/issues/{number}', { status: 500 });

    const failed = await call('/repos/acme/flaky/issues/1');
    assert.equal(failed.status, 500);
    assert.equal(failed.body.message, 'Server Error');
    const served = await call('/repos/acme/flaky/issues/1');
    assert.equal(served.status, 200);
    assert.equal(served.body.title, 'one');
    assert.equal(fault.hits, 1);
  });

  it('answers a secondary rate limit with retry-after and GitHub’s message', async () => {
    gh.addRepo('acme/busy');
    gh.addIssue('acme/busy', { title: 'one', user: 'alice' });
    gh.fail('POST /repos/*/*/issues/*/comments', secondaryRateLimit({ retryAfter: 1 }));

    const limited = await call('/repos/acme/busy/issues/1/comments', {
      method: 'POST',
      body: { body: 'hi' },
    });
    assert.equal(limited.status, 403);
    assert.equal(limited.headers.get('retry-after'), '1');
    assert.match(limited.body.message, /exceeded a secondary rate limit/);
    assert.notEqual(limited.headers.get('x-ratelimit-remaining'), '0', 'not the primary limit');
    assert.equal(gh.comments('acme/busy', 1).length, 0);

    const retried = await call('/repos/acme/busy/issues/1/comments', {
      method: 'POST',
      body: { body: 'hi' },
    });
    assert.equal(retried.status, 201);
    assert.equal(gh.comments('acme/busy', 1).length, 1);
  });

  it('holds a delayed request while serving others, and close() ends it', async () => {
    const slow = await startFakeGitHub();
    try {
      slow.addToken(TOKEN, 'thopter-hub');
      slow.addRepo('acme/slow');
      slow.delay('GET /repos/acme/slow', 600_000);
      const auth = { authorization: `token ${TOKEN}` };
      const held = fetch(`${slow.url}/repos/acme/slow`, { headers: auth }).then(
        (r) => r.status,
        () => 'reset',
      );
      await waitFor('the delayed request to arrive', () => slow.requests.length === 1, { timeoutMs: 10_000 });
      const other = await fetch(`${slow.url}/user`, { headers: auth });
      assert.equal(other.status, 200);
      assert.equal(slow.requests[0]?.status, 0, 'still in flight');
      await slow.close();
      assert.equal(await held, 'reset');
    } finally {
      await slow.close();
    }
  });
});

describe('fake GitHub: authentication and permissions', () => {
  it('refuses an unknown token with 401 Bad credentials, and never logs a token', async () => {
    assert.equal((await call('/user', { headers: { authorization: `Bearer ${TOKEN}` } })).status, 200);
    const res = await call('/user', { token: 'ghp_not_registered' });
    assert.equal(res.status, 401);
    assert.equal(res.body.message, 'Bad credentials');
    assert.match(res.body.documentation_url, /^https:\/\/docs\.github\.com\//);

    const logged = gh.requests.at(-1)!;
    assert.equal(logged.status, 401);
    assert.equal(logged.headers.authorization, true);
    const log = JSON.stringify(gh.requests);
    assert.equal(log.includes(TOKEN), false);
    assert.equal(log.includes('ghp_not_registered'), false);
  });

  it('hides an unselected private repository and refuses writes to an unselected public one', async () => {
    gh.addRepo('acme/secret', { private: true });
    gh.addRepo('acme/open');
    gh.addIssue('acme/open', { title: 'one', user: 'alice' });
    gh.addToken('github_pat_narrow', 'narrow', { repositories: ['acme/other'] });
    gh.setPermission('acme/secret', 'narrow', 'admin');

    assert.equal((await call('/repos/acme/secret', { token: 'github_pat_narrow' })).status, 404);
    assert.equal((await call('/repos/acme/open/issues', { token: 'github_pat_narrow' })).status, 200);
    const write = await call('/repos/acme/open/issues/1/comments', {
      method: 'POST',
      token: 'github_pat_narrow',
      body: { body: 'hi' },
    });
    assert.equal(write.status, 403);
    assert.equal(write.body.message, 'Resource not accessible by personal access token');
  });

  it('reports the legacy base role in permission and the role in role_name', async () => {
    gh.addRepo('acme/perm');
    gh.addRepo('acme/private-perm', { private: true });
    gh.setPermission('acme/perm', 'thopter-hub', 'write');
    gh.setPermission('acme/private-perm', 'thopter-hub', 'admin');
    gh.setPermission('acme/perm', 'mallory', 'maintain');
    gh.setPermission('acme/perm', 'trudy', 'triage');

    const level = async (repo: string, login: string) => {
      const { body } = await call(`/repos/${repo}/collaborators/${login}/permission`);
      return [body.permission, body.role_name, body.user.login];
    };
    assert.deepEqual(await level('acme/perm', 'mallory'), ['write', 'maintain', 'mallory']);
    assert.deepEqual(await level('acme/perm', 'trudy'), ['read', 'triage', 'trudy']);
    assert.deepEqual(await level('acme/perm', 'acme'), ['admin', 'admin', 'acme'], 'the owner');
    assert.deepEqual(await level('acme/perm', 'stranger'), ['read', 'read', 'stranger'], 'public: read');
    assert.deepEqual(await level('acme/private-perm', 'stranger'), ['none', 'none', 'stranger']);

    gh.setPermission('acme/perm', 'thopter-hub', 'triage');
    const refused = await call('/repos/acme/perm/collaborators/mallory/permission');
    assert.equal(refused.status, 403);
    assert.equal(refused.body.message, 'Must have push access to view collaborator permission.');
  });
});

describe('fake GitHub: comments', () => {
  it('records comments the hub posts and edits, as the token’s user', async () => {
    gh.addRepo('acme/talk');
    gh.addIssue('acme/talk', { title: 'one', user: 'alice' });
    clock = T0 + 60_000;
    try {
      const posted = await call('/repos/acme/talk/issues/1/comments', {
        method: 'POST',
        body: { body: 'Thopter launched' },
      });
      assert.equal(posted.status, 201);
      assert.equal(posted.body.user.login, 'thopter-hub');
      assert.match(posted.body.issue_url, /\/repos\/acme\/talk\/issues\/1$/);
      const issue = gh.issue('acme/talk', 1);
      assert.equal(issue.comments, 1);
      assert.equal(issue.updated_at, '2024-05-01T12:01:00Z', 'a comment bumps the issue');

      const edited = await call(`/repos/acme/talk/issues/comments/${posted.body.id}`, {
        method: 'PATCH',
        body: { body: 'Thopter finished' },
      });
      assert.equal(edited.status, 200);
      assert.deepEqual(
        gh.comments('acme/talk', 1).map((c) => [c.id, c.body, c.user?.login]),
        [[posted.body.id, 'Thopter finished', 'thopter-hub']],
      );
      const listed = await call('/repos/acme/talk/issues/1/comments');
      assert.deepEqual(
        listed.body.map((c: any) => c.body),
        ['Thopter finished'],
      );

      const empty = await call('/repos/acme/talk/issues/1/comments', { method: 'POST', body: {} });
      assert.equal(empty.status, 422);
    } finally {
      clock = T0;
    }
  });
});

describe('fake GitHub: webhooks', () => {
  it('signs like GitHub’s documented example', () => {
    assert.equal(
      signWebhook("It's a Secret to Everybody", 'Hello, World!'),
      'sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17',
    );
  });

  it('delivers an issue_comment event whose signature node:crypto HMAC verifies', async () => {
    gh.addRepo('acme/hooks');
    gh.addIssue('acme/hooks', { title: 'do it', user: 'alice' });
    const comment = gh.addComment('acme/hooks', 1, { body: '/thopter', user: 'alice' });

    const received: { headers: Record<string, string | string[] | undefined>; body: string }[] = [];
    const receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        received.push({ headers: req.headers, body });
        res.writeHead(202).end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    try {
      const url = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/webhook`;
      const event = gh.issueCommentEvent('acme/hooks', Number(comment.id), 'created');
      const res = await deliverWebhook(url, { ...event, secret: 'hook-secret', deliveryId: 'd-1' });
      assert.equal(res.status, 202);
    } finally {
      receiver.closeAllConnections();
      await new Promise((r) => receiver.close(r));
    }

    const [delivery] = received;
    assert.ok(delivery);
    assert.equal(delivery.headers['x-github-event'], 'issue_comment');
    assert.equal(delivery.headers['x-github-delivery'], 'd-1');
    assert.equal(delivery.headers['content-type'], 'application/json');
    const signature = String(delivery.headers['x-hub-signature-256']);
    const verify = (secret: string) => {
      const expected = `sha256=${createHmac('sha256', secret).update(delivery.body).digest('hex')}`;
      return (
        expected.length === signature.length && timingSafeEqual(Buffer.from(expected), Buffer.from(signature))
      );
    };
    assert.equal(verify('hook-secret'), true);
    assert.equal(verify('another-secret'), false);

    const payload = JSON.parse(delivery.body);
    assert.equal(payload.action, 'created');
    assert.equal(payload.comment.body, '/thopter');
    assert.equal(payload.issue.number, 1);
    assert.equal(payload.repository.full_name, 'acme/hooks');
    assert.equal(payload.sender.login, 'alice');
  });

  it('builds edited payloads with the previous text in changes', () => {
    gh.addRepo('acme/edits');
    gh.addIssue('acme/edits', { title: 'draft', body: 'v1', user: 'alice' });
    const comment = gh.addComment('acme/edits', 1, { body: 'first', user: 'alice' });
    gh.editComment('acme/edits', Number(comment.id), { body: '/thopter', user: 'bob' });
    gh.editIssue('acme/edits', 1, { title: 'final' });

    const commentEdit = gh.issueCommentEvent('acme/edits', Number(comment.id), 'edited').payload as any;
    assert.deepEqual(commentEdit.changes, { body: { from: 'first' } });
    assert.equal(commentEdit.comment.body, '/thopter');
    assert.equal(commentEdit.sender.login, 'bob');

    const issueEdit = gh.issuesEvent('acme/edits', 1, 'edited').payload as any;
    assert.deepEqual(issueEdit.changes, { title: { from: 'draft' } });
    assert.equal(issueEdit.issue.title, 'final');

    gh.closeIssue('acme/edits', 1, { user: 'carol' });
    const closed = gh.issuesEvent('acme/edits', 1, 'closed').payload as any;
    assert.equal(closed.issue.state, 'closed');
    assert.equal(closed.sender.login, 'carol');
  });
});

describe('fake GitHub: reactions', () => {
  it('keeps one reaction per account and content: 201 new, 200 existing, 422 for an unknown content', async () => {
    gh.addRepo('acme/reacts');
    const issue = gh.addIssue('acme/reacts', { title: 'x', user: 'alice' });
    const comment = gh.addComment('acme/reacts', issue.number, { user: 'alice', body: '/thopter tell hi' });
    const path = `/repos/acme/reacts/issues/comments/${comment.id}/reactions`;
    const made = await call(path, { method: 'POST', body: { content: 'eyes' } });
    assert.equal(made.status, 201);
    assert.equal(made.body.content, 'eyes');
    assert.equal(made.body.user.login, 'thopter-hub');
    const again = await call(path, { method: 'POST', body: { content: 'eyes' } });
    assert.equal(again.status, 200);
    assert.equal(again.body.id, made.body.id);
    assert.equal((await call(path, { method: 'POST', body: { content: 'wave' } })).status, 422);
    assert.equal((await call(path, { method: 'POST', body: {} })).status, 422);
    assert.equal((await call(path, { method: 'POST', token: null, body: { content: 'eyes' } })).status, 401);
    assert.equal(
      (
        await call(`/repos/acme/reacts/issues/comments/999/reactions`, {
          method: 'POST',
          body: { content: 'eyes' },
        })
      ).status,
      404,
    );

    const listed = await call(`${path}?content=eyes`);
    assert.deepEqual(
      listed.body.map((r: any) => [r.user.login, r.content]),
      [['thopter-hub', 'eyes']],
    );
    assert.deepEqual((await call(`${path}?content=heart`)).body, []);
    assert.equal((await call(`${path}?content=wave`)).status, 422);

    const onIssue = `/repos/acme/reacts/issues/${issue.number}/reactions`;
    assert.equal((await call(onIssue, { method: 'POST', body: { content: 'rocket' } })).status, 201);
    assert.deepEqual(gh.reactions('acme/reacts', { issueNumber: issue.number }), [
      { login: 'thopter-hub', content: 'rocket' },
    ]);
  });
});
