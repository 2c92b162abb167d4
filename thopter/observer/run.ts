import type { Activity } from '../../src/status/activity.js';
import type { ObserverConfig } from './config.js';
import { CachedFile, type Sensors } from './machine.js';
import { observeOnce, stoppedPost, type Observation } from './observe.js';
import { describe, Reporter, type Send } from './report.js';

export interface RunDeps {
  config: ObserverConfig;
  sensors: Sensors;
  send: Send;
  log: (line: string) => void;
  /** Aborted to stop: the loop ends and a final `stopped` status is posted. */
  stop: AbortSignal;
}

/** Observes and reports until `stop` is aborted, then posts the final status. */
export async function runObserver(deps: RunDeps): Promise<void> {
  const { config, sensors, log, stop } = deps;
  const spawnedAt = new Date().toISOString();
  const reporter = new Reporter({
    statusUrl: config.statusUrl,
    token: new CachedFile(config.tokenFile),
    send: deps.send,
    log,
    baseMs: config.intervalMs,
    backoffMaxMs: config.backoffMaxMs,
    slowRetryMs: config.slowRetryMs,
    postTimeoutMs: config.postTimeoutMs,
  });
  log(
    `observing tmux session "${config.tmuxSession}" for ${config.thopterId} every ${config.intervalMs} ms ` +
      `(idle after ${config.idleAfterMs} ms, agent process "${config.agentProcess}"), posting to ${config.statusUrl}`,
  );
  const observe = (previous: Activity | undefined) =>
    observeOnce(
      { sensors, thopterId: config.thopterId, spawnedAt, idleAfterMs: config.idleAfterMs },
      previous,
    );

  let last: Observation | undefined;
  let said = '';
  let saidIssue = '';
  let saidError = '';
  let next = Date.now();
  while (!stop.aborted) {
    try {
      last = await observe(last?.activity);
      const p = last.post;
      // Keyed on the states alone: tmux's wording of why a session is gone may vary from look to look.
      const session = `session ${p.tmuxState}, agent ${p.claudeProcess}`;
      if (session !== said) log(`${(said = session)}${last.gone ? ` (tmux: ${last.gone})` : ''}`);
      const issue = last.issueProblem
        ? `issue.json left out of the status: ${last.issueProblem}`
        : p.repository
          ? `issue context: ${p.repository}${p.github?.issueNumber ? `#${p.github.issueNumber}` : ''}`
          : '';
      if (issue !== saidIssue) log((saidIssue = issue) || 'no issue context');
      await reporter.offer(p, stop);
      saidError = '';
    } catch (err) {
      // Never expected; logged (once while it repeats), and the next tick tries again rather than
      // leaving the hub blind.
      const error = `observation failed: ${(err as Error).stack ?? String(err)}`;
      if (error !== saidError) log((saidError = error));
    }
    // Ticks keep to the interval; one that overran is followed at once, not by a burst.
    next = Math.max(next + config.intervalMs, Date.now());
    await sleep(next - Date.now(), stop);
  }

  last ??= await observe(undefined).catch(() => undefined);
  if (!last) return log('stopping; nothing observed to report');
  const outcome = await reporter.final(stoppedPost(last.post), config.stopTimeoutMs);
  if (!outcome) log('stopping; no status token, so no final status was sent');
  else if (outcome.kind === 'accepted')
    log(`stopping; the hub took the final stopped status (${outcome.status})`);
  else log(`stopping; the final stopped status was not taken: ${describe(outcome, config.statusUrl)}`);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted || ms <= 0) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
