/**
 * The finish line's latency: from the moment the agent's turn ends (its Stop hook writes the line)
 * or its process exits, to the report comment on the issue, on the local provider with the fake
 * GitHub (commands arrive by webhook-free polling; the report path does not depend on intake).
 *
 *   node --import tsx bench/finish.ts [thopters=5]
 *
 * Each thopter's agent is a shell that marks one turn the way Claude Code's Stop hook does, waits,
 * then exits, writing the time of each. The bench polls the fake's comments every 20 ms.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startFakeGitHub } from '../test/fakes/github.js';
import { TestWorld } from '../test/helpers/env.js';
import { waitFor } from '../test/helpers/wait.js';

const [THOPTERS = 5] = process.argv.slice(2).map(Number);
const REPO = 'acme/widget';
const TOKEN = 'ghp_issues_token_for_the_bench';
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const max = (xs: number[]) => Math.max(...xs);

// The agent: it says something in its transcript, ends a turn 2 s after it starts (as Claude
// Code's Stop hook marks it), and exits 4 s later; both times in ms since the epoch.
const AGENT_SCRIPT = `sleep 2
mkdir -p ~/.claude/projects/bench
echo '{"type":"assistant","message":{"id":"m1","role":"assistant","content":[{"type":"text","text":"Done."}]}}' > ~/.claude/projects/bench/s.jsonl
printf '%s\\t{}\\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" >> ~/.thopter/turns.log
date +%s%3N > ~/.thopter/turn-at
sleep 4
date +%s%3N > ~/.thopter/exit-at
`;

async function main() {
  console.log(
    `machine: ${os.cpus()[0]?.model} × ${os.cpus().length}, node ${process.version}, ${new Date().toISOString()}`,
  );
  const world = await new TestWorld().start();
  const gh = await startFakeGitHub();
  try {
    const origin = world.origin('widget');
    const agent = path.join(world.dir, 'agent.sh');
    writeFileSync(agent, AGENT_SCRIPT);
    gh.addToken(TOKEN, 'thopter-hub');
    gh.addRepo(REPO, { cloneUrl: origin });
    gh.setPermission(REPO, 'thopter-hub', 'write');
    gh.setPermission(REPO, 'alice', 'write');
    const hub = await world.hub({
      LOG_LEVEL: 'warn',
      MAX_THOPTERS: String(THOPTERS),
      THOPTER_AGENT_COMMAND: `sh ${agent}`,
      THOPTER_AGENT_SETTLE: '100ms',
      GITHUB_API_URL: gh.url,
      GITHUB_INTEGRATION_JSON: JSON.stringify({ repositories: { [REPO]: { issuesPAT: TOKEN } } }),
      GITHUB_ISSUES_POLLING_INTERVAL: '1',
    });
    const issues = Array.from({ length: THOPTERS }, (_, i) => {
      const n = gh.addIssue(REPO, { title: `Bench ${i}`, body: '', user: 'alice' }).number;
      gh.addComment(REPO, n, { user: 'alice', body: '/thopter' });
      return n;
    });
    const seen = new Map<string, number>();
    const timer = setInterval(() => {
      for (const n of issues) {
        for (const c of gh.comments(REPO, n)) {
          const key = /^<!-- thopter-report:(thopter-[a-f0-9]+):(turn-1|exit) -->/.exec(c.body ?? '');
          if (key && !seen.has(`${key[1]}:${key[2]}`)) seen.set(`${key[1]}:${key[2]}`, Date.now());
        }
      }
    }, 20);
    await waitFor('every report', () => seen.size === 2 * THOPTERS, { timeoutMs: 180_000 });
    clearInterval(timer);
    const turn: number[] = [];
    const exit: number[] = [];
    for (const t of await hub.store.list()) {
      const home = path.join(world.dir, 'data', 'thopters', t.machine!.id, 'home', '.thopter');
      turn.push(seen.get(`${t.id}:turn-1`)! - Number(readFileSync(path.join(home, 'turn-at'), 'utf8')));
      exit.push(seen.get(`${t.id}:exit`)! - Number(readFileSync(path.join(home, 'exit-at'), 'utf8')));
    }
    console.log(`thopters: ${THOPTERS} (local provider, THOPTER_STATUS_INTERVAL default)`);
    console.log(`turn end → report on the issue: median ${median(turn)} ms, max ${max(turn)} ms`);
    console.log(`agent exit → report on the issue: median ${median(exit)} ms, max ${max(exit)} ms`);
  } finally {
    await gh.close();
    await world.close();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
