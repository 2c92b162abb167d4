/**
 * GitHub intake: command → acknowledgement latency, and what a poll cycle costs.
 *
 *   node --import tsx bench/github-intake.ts
 *
 * Against the fake GitHub in test/fakes (on loopback), with a real hub, Redis and the local
 * provider. Latency is from the moment the command exists (webhook: the delivery is sent) until
 * the fake holds the acknowledgement comment. MAX_THOPTERS=1, so the thopters wait in line and the
 * figures are the intake's own, not provisioning's. BENCH_SAMPLES (20) commands per path, 3.2 s
 * apart; BENCH_REPOS (1,100,1000) idle repositories for the poll-cost table.
 */
import { deliverWebhook, startFakeGitHub, type FakeGitHub } from '../test/fakes/github.js';
import { TestWorld } from '../test/helpers/env.js';
import { waitFor } from '../test/helpers/wait.js';

const SECRET = 'bench-secret';
const TOKEN = 'ghp_bench';
const percentile = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))]!;
const hasAck = (gh: FakeGitHub, repo: string, n: number) =>
  gh.comments(repo, n).some((c) => c.body?.includes('<!-- thopter-ack:'));

async function latency(mode: 'webhook' | 'polling', samples: number) {
  const world = await new TestWorld().start();
  const gh = await startFakeGitHub({ rateLimit: 1_000_000 });
  const repo = 'acme/bench';
  gh.addToken(TOKEN, 'thopter-hub');
  gh.addRepo(repo, { cloneUrl: world.origin() });
  gh.setPermission(repo, 'thopter-hub', 'write');
  gh.setPermission(repo, 'alice', 'write');
  const hub = await world.hub({
    MAX_THOPTERS: '1',
    GITHUB_API_URL: gh.url,
    GITHUB_INTEGRATION_JSON: JSON.stringify({ repositories: { [repo]: { issuesPAT: TOKEN } } }),
    GITHUB_WEBHOOK_SECRET: SECRET,
    // Webhook runs: polls far apart, so only the webhook can be what answers.
    GITHUB_ISSUES_POLLING_INTERVAL: mode === 'webhook' ? '3600' : '1',
  });
  const out: number[] = [];
  try {
    for (let i = 0; i < samples; i++) {
      const issue = gh.addIssue(repo, { title: `bench ${i}`, body: 'x', user: 'bob' });
      const comment = gh.addComment(repo, issue.number, { user: 'alice', body: '/thopter' });
      const t0 = performance.now();
      if (mode === 'webhook') {
        const res = await deliverWebhook(`${hub.url}/github/webhook`, {
          ...gh.issueCommentEvent(repo, comment.id, 'created'),
          secret: SECRET,
        });
        if (res.status !== 202) throw new Error(`webhook answered ${res.status}`);
      }
      await waitFor('the ack', () => hasAck(gh, repo, issue.number), { timeoutMs: 30_000, intervalMs: 2 });
      out.push(performance.now() - t0);
      // Octokit's throttling spaces content-creating requests (comments) 3 s apart, as GitHub's
      // best practices ask: wait that out so each sample is a command arriving on its own.
      await new Promise((r) => setTimeout(r, 3200));
    }
  } finally {
    await gh.close();
    await world.close();
  }
  return out;
}

async function pollCost(repos: number) {
  const world = await new TestWorld().start();
  const gh = await startFakeGitHub({ rateLimit: 1_000_000 });
  gh.addToken(TOKEN, 'thopter-hub');
  const names = Array.from({ length: repos }, (_, i) => `org${i % 10}/repo${i}`);
  for (const name of names) {
    gh.addRepo(name);
    gh.addIssue(name, { title: 'an old issue', body: 'nothing to do', user: 'bob' });
  }
  await world.hub({
    GITHUB_API_URL: gh.url,
    GITHUB_INTEGRATION_JSON: JSON.stringify({
      repositories: Object.fromEntries(names.map((n) => [n, { issuesPAT: TOKEN }])),
    }),
    GITHUB_ISSUES_POLLING_INTERVAL: '1',
  });
  const lists = () =>
    gh.requests.filter((r) => r.canonicalPath.endsWith('/issues') && r.method === 'GET').length;
  try {
    // Two full cycles to warm the conditional-request cache, then measure the next full cycle.
    await waitFor('two warm-up cycles', () => lists() >= repos * 2, { timeoutMs: 600_000, intervalMs: 50 });
    const from = gh.requests.length;
    const started = performance.now();
    await waitFor('one measured cycle', () => lists() >= repos * 3, { timeoutMs: 600_000, intervalMs: 20 });
    const cycleMs = performance.now() - started;
    const cycle = gh.requests.slice(from);
    const counted = cycle.reduce((s, r) => s + r.cost, 0);
    return {
      requests: cycle.length,
      counted,
      notModified: cycle.filter((r) => r.status === 304).length,
      cycleMs,
    };
  } finally {
    await gh.close();
    await world.close();
  }
}

async function main() {
  console.log('| path | samples | p50 | p99 | max |\n| --- | --- | --- | --- | --- |');
  const samples = Number(process.env.BENCH_SAMPLES ?? 20);
  for (const mode of ['webhook', 'polling'] as const) {
    const n = samples;
    const xs = await latency(mode, n);
    console.log(
      `| ${mode}${mode === 'polling' ? ' (interval 1 s)' : ''} | ${n} | ${Math.round(percentile(xs, 50))} ms | ${Math.round(percentile(xs, 99))} ms | ${Math.round(Math.max(...xs))} ms |`,
    );
  }
  console.log(
    '\n| idle repositories | requests per cycle | counted against the rate limit | answered 304 | cycle time |\n| --- | --- | --- | --- | --- |',
  );
  for (const repos of (process.env.BENCH_REPOS ?? '1,100,1000').split(',').map(Number)) {
    const c = await pollCost(repos);
    console.log(
      `| ${repos} | ${c.requests} | ${c.counted} | ${c.notModified} | ${Math.round(c.cycleMs)} ms |`,
    );
  }
}

void main().catch((err) => {
  console.error(err);
  process.exit(1);
});
