import { WaitingError, type Job, type Processor } from 'bullmq';
import { AbortedError, messageOf, sleep } from '../errors.js';
import type { Logger } from '../log.js';
import type { SessionSnapshot } from '../providers/types.js';
import type { JobTable } from '../queues/jobs.js';
import { nextActivity } from '../status/activity.js';
import { isFinal, type SessionStatus, type ThopterRecord } from '../thopters/record.js';
import type { ProcessorDeps } from './deps.js';
import { keepToBudget } from './budget.js';
import { actOnAgentNews } from './finish.js';
import { renewGitTokenIfDue } from './git-token.js';
import { isHandoff } from './handoff.js';
import { PHASES } from './phases/index.js';
import { StallWatcher } from './stall.js';
import { teardown } from './teardown.js';

/**
 * A lifecycle job wakes at every change of its record (a phase result, a destroy request); this
 * is only how long it waits when nothing changes, the net for a missed notification.
 */
const WAKE_MS = 1000;
/**
 * A running thopter's job looks for a destroy request it might have missed this often (it is
 * woken at once when one is made). 1000 running thopters cost 200 Redis calls a second at 5 s.
 */
const SUPERVISE_WAKE_MS = 5000;
/** How often a thopter whose observer posts its session is checked (idle timeout, lifetime, machine). */
const OBSERVED_CHECK_MS = 15_000;
/**
 * An observer that has not posted for this many status intervals is silent: its last state is no
 * longer the truth (an `active` that never ends would keep THOPTER_IDLE_TIMEOUT from firing).
 */
const SILENT_AFTER_INTERVALS = 5;
const RETRY_MAX_MS = 30_000;

/**
 * One thopter's whole life, as one active job that holds one MAX_THOPTERS slot from the first
 * phase until its machine is gone: start the provisioning flow, wait for it, then supervise.
 * Everything it knows is on the thopter's record, so after a crash any hub resumes it.
 */
export function lifecycleProcessor(deps: ProcessorDeps): Processor<JobTable['lifecycle'], string> {
  return async (job: Job<JobTable['lifecycle']>, token?: string, signal?: AbortSignal) => {
    const log = deps.log.child({ thopter: job.data.thopterId, issue: job.data.label, jobId: job.id });
    try {
      return await live(deps, job, signal ?? new AbortController().signal, log);
    } catch (err) {
      if (isHandoff(signal) && token) {
        // Back at the head of the line, ahead of every prioritized launch: this thopter's machine
        // is alive, so it must get the next free slot, not a newcomer (priority 0 goes to the
        // plain wait list, which BullMQ serves before the prioritized set).
        await job.changePriority({ priority: 0 });
        await job.moveToWait(token);
        log.info('handed back for another hub to carry on');
        throw new WaitingError();
      }
      log.error({ err: messageOf(err) }, 'lifecycle error; the job will be retried');
      throw err;
    }
  };
}

/**
 * Runs `step` until it succeeds. Once a machine may exist the job must not fail: a failed or
 * delayed job holds no slot, and its machine would then count against nobody's MAX_THOPTERS.
 * So Redis blips and provider errors are waited out here, with the slot kept.
 */
async function persist<T>(
  what: string,
  step: () => Promise<T>,
  signal: AbortSignal,
  log: Logger,
): Promise<T> {
  for (let delay = 1000; ; delay = Math.min(delay * 2, RETRY_MAX_MS)) {
    try {
      return await step();
    } catch (err) {
      if (err instanceof AbortedError) throw err;
      log.warn({ err: messageOf(err), retryInMs: delay }, `${what} failed; trying again`);
      await sleep(delay, signal);
    }
  }
}

async function live(deps: ProcessorDeps, job: Job<JobTable['lifecycle']>, signal: AbortSignal, log: Logger) {
  const { store } = deps;
  const id = job.data.thopterId;
  const record = await persist(
    'starting',
    async () => {
      const found = await store.get(id);
      if (!found || isFinal(found.state)) return found;
      if (found.state === 'queued') {
        await store.setState(id, 'provisioning', 'startedAt');
        await store.addEvent(id, 'provisioning', 'a slot is free: provisioning started');
        await deps.announce(id);
        log.info('provisioning started');
      } else {
        await store.addEvent(id, 'resumed', `resumed while ${found.state}`);
        log.info({ state: found.state }, 'resumed');
      }
      return found;
    },
    signal,
    log,
  );
  if (!record || isFinal(record.state)) return 'already ended';
  const end = async (final: 'destroyed' | 'failed', reason: string) => {
    await persist('teardown', () => teardown(deps, id, final, reason), signal, log);
    return final;
  };

  if (record.state === 'stopping') return end('destroyed', record.destroyRequested?.reason ?? 'destroyed');
  if (record.state === 'kept' && record.kept) return keepFailed(deps, id, record.kept, signal, log, end);

  if (record.state === 'queued' || record.state === 'provisioning') {
    const outcome = await provision(deps, record, job.data.label, signal, log);
    if (outcome.kind === 'failed') {
      const kept = await persist('keeping', () => keepIfAsked(deps, id, outcome.reason), signal, log);
      if (kept) return keepFailed(deps, id, kept, signal, log, end);
      log.warn({ reason: outcome.reason }, 'provisioning failed; tearing down');
      return end('failed', outcome.reason);
    }
    if (outcome.kind === 'destroy') return end('destroyed', outcome.reason);
    await persist(
      'recording running',
      async () => {
        await store.setState(id, 'running', 'runningAt');
        await store.addEvent(id, 'running', 'the agent is running');
        await deps.announce(id);
      },
      signal,
      log,
    );
    log.info('running');
  }
  return supervise(deps, id, signal, log, end);
}

type ProvisionOutcome =
  { kind: 'provisioned' } | { kind: 'failed'; reason: string } | { kind: 'destroy'; reason: string };

/** Adds the provisioning flow (a no-op when it exists) and waits until it settles. */
async function provision(
  deps: ProcessorDeps,
  record: ThopterRecord,
  label: string,
  signal: AbortSignal,
  log: Logger,
): Promise<ProvisionOutcome> {
  const { store, queues } = deps;
  const id = record.id;
  const last = PHASES[PHASES.length - 1]!.name;
  const look = async (): Promise<ProvisionOutcome | undefined> => {
    const current = await store.get(id);
    if (!current || isFinal(current.state)) return { kind: 'destroy', reason: 'the record ended meanwhile' };
    const state = await queues.provisionState(id);
    const lastOutcome = current.phases[last]?.outcome;
    if (state === 'completed' || lastOutcome === 'succeeded' || lastOutcome === 'warning') {
      return { kind: 'provisioned' };
    }
    if (state === 'failed') {
      // Only a settled flow is acted on, so no phase creates anything after the teardown.
      if (current.destroyRequested) return { kind: 'destroy', reason: current.destroyRequested.reason };
      const failed = PHASES.find((p) => current.phases[p.name]?.outcome === 'failed');
      const error = failed ? current.phases[failed.name]?.error : undefined;
      return {
        kind: 'failed',
        reason: failed ? `${failed.name} failed: ${error ?? 'unknown error'}` : 'provisioning failed',
      };
    }
    // Absent: first start, or removed by age while this job was stalled. Adding it again is a
    // no-op for every phase job that still exists.
    if (state === 'unknown') await queues.addProvisionFlow(id, label, record.request.priority);
    return undefined;
  };
  for (;;) {
    const outcome = await persist('watching the provisioning flow', look, signal, log);
    if (outcome) return outcome;
    await deps.changes.wait(id, WAKE_MS, signal);
  }
}

/**
 * With THOPTER_KEEP_FAILED, a thopter whose provisioning failed keeps its machine (terminal and
 * all) for a look. Only when a machine exists: there is nothing to look at otherwise.
 */
async function keepIfAsked(deps: ProcessorDeps, id: string, reason: string) {
  const { store, config } = deps;
  const record = await store.get(id);
  if (!config.keepFailedMs || record?.machine?.state !== 'created' || record.destroyRequested)
    return undefined;
  const kept = { reason, until: new Date(Date.now() + config.keepFailedMs).toISOString() };
  if (!(await store.keep(id, kept.reason, kept.until))) return undefined;
  await store.addEvent(
    id,
    'kept',
    `${reason}; the machine is kept until ${kept.until} (THOPTER_KEEP_FAILED)`,
  );
  await deps.announce(id);
  return kept;
}

/**
 * A kept thopter's job holds its MAX_THOPTERS slot (its machine lives) until it is killed or
 * THOPTER_KEEP_FAILED_TIMEOUT passes; either way it ends `failed`, with what failed.
 */
async function keepFailed(
  deps: ProcessorDeps,
  id: string,
  kept: { reason: string; until: string },
  signal: AbortSignal,
  log: Logger,
  end: (final: 'failed', reason: string) => Promise<string>,
): Promise<string> {
  log.warn({ reason: kept.reason, until: kept.until }, 'provisioning failed; the machine is kept');
  for (;;) {
    const requested = await persist('watching a kept thopter', () => deps.store.get(id), signal, log);
    if (!requested || isFinal(requested.state)) return 'ended';
    if (requested.destroyRequested) {
      return end('failed', `${kept.reason}; kept, then ${requested.destroyRequested.reason}`);
    }
    const left = Date.parse(kept.until) - Date.now();
    if (left <= 0)
      return end('failed', `${kept.reason}; kept until ${kept.until} (THOPTER_KEEP_FAILED_TIMEOUT)`);
    await deps.changes.wait(id, Math.min(SUPERVISE_WAKE_MS, left), signal);
  }
}

/** Watches a running thopter until it is destroyed: session status, idle timeout, lifetime. */
async function supervise(
  deps: ProcessorDeps,
  id: string,
  signal: AbortSignal,
  log: Logger,
  end: (final: 'destroyed', reason: string) => Promise<string>,
): Promise<string> {
  const { store, config } = deps;
  let nextCheck = 0;
  const stall = new StallWatcher(deps, log);
  const step = async (): Promise<string | undefined> => {
    const news = await store.supervisionNews(id);
    if (news.turnEnded) {
      // A turn ended (a session write recorded it and woke this job): report it now, not at the
      // next check.
      const record = await store.get(id);
      if (record) await actOnAgentNews(deps, record, record.session, log);
    }
    if (news.destroyRequested) {
      const reason = (await store.get(id))?.destroyRequested?.reason ?? 'destroyed';
      log.info({ reason }, 'destroying');
      return end('destroyed', reason);
    }
    if (Date.now() < nextCheck) return undefined;
    // When an observer posts the session, this check only applies idle timeout and lifetime and
    // looks for the machine: every 15 s is plenty, and 1000 thopters cost 67 reads a second.
    nextCheck =
      Date.now() +
      (deps.provider.hubObserves
        ? config.statusIntervalMs
        : Math.max(config.statusIntervalMs, OBSERVED_CHECK_MS));
    const record = await store.get(id);
    if (!record || isFinal(record.state)) return 'ended';
    const verdict = await check(deps, record, log);
    await renewGitTokenIfDue(deps, record, log);
    // The session just read may show the agent gone: the finish line reports that.
    const now = await store.get(id);
    if (now) await actOnAgentNews(deps, now, now.session, log);
    if (now && !verdict) await stall.look(now);
    // Its usage was just read with the session (or posted by its observer).
    const overBudget = now && !verdict ? await keepToBudget(deps, now, log) : undefined;
    if (overBudget) await store.requestDestroy(id, overBudget);
    if (verdict === 'machine-gone') return end('destroyed', 'the machine disappeared');
    // The next step sees the request and tears down.
    if (verdict) await store.requestDestroy(id, verdict);
    return undefined;
  };
  for (;;) {
    const done = await persist('supervising', step, signal, log);
    if (done) return done;
    // Destroy requests wake it at once (record changes); the timeout is the safety net and the
    // session check's schedule.
    await deps.changes.wait(id, Math.max(1, Math.min(SUPERVISE_WAKE_MS, nextCheck - Date.now())), signal);
  }
}

/** Observes the session (when the hub does that for its provider); returns why to destroy, if so. */
async function check(deps: ProcessorDeps, record: ThopterRecord, log: Logger): Promise<string | undefined> {
  const { provider, config, store } = deps;
  const machineId = record.machine?.id;
  if (!machineId || !(await provider.get(machineId))) return 'machine-gone';
  const upkeep = await provider.keepUp?.(machineId);
  if (upkeep?.kind === 'down') return upkeep.reason;
  if (upkeep?.kind === 'restarted') await store.addEvent(record.id, 'machine-restarted', upkeep.reason);
  let session: SessionStatus | undefined = record.session;
  if (provider.hubObserves) {
    try {
      const snap = await provider.snapshot(machineId);
      const now = new Date();
      const activity = nextActivity(session, snap.screen, now, config.idleAfterMs);
      session = {
        state: snap.sessionAlive ? activity.state : 'stopped',
        agentRunning: snap.agentRunning,
        lastActivity: activity.lastActivity,
        idleSince: activity.idleSince,
        screen: snap.screen,
        updatedAt: now.toISOString(),
        source: 'hub',
        ...(snap.turns ? { turns: snap.turns } : {}),
      };
      await store.setSession(
        record.id,
        session,
        snap.usage ? { usage: { totals: snap.usage, prices: config.prices } } : {},
      );
    } catch (err) {
      log.warn({ err: messageOf(err) }, 'could not read the session');
    }
  } else if (observerSilent(record, config.statusIntervalMs)) {
    session = await lookWhileSilent(deps, record, machineId, log);
  }
  const now = Date.now();
  const { idleTimeoutMs, maxLifetimeMs } = config;
  // Idle time counts from the last screen change, so THOPTER_IDLE_TIMEOUT=30m means 30 quiet minutes.
  // While the observer is silent, from the last change anyone saw: it or the hub.
  const quietMs =
    session?.state === 'idle' || session?.state === 'unknown' ? now - Date.parse(session.lastActivity) : 0;
  if (idleTimeoutMs && quietMs >= idleTimeoutMs) {
    const silent = session?.state === 'unknown' ? `; its observer silent since ${session.silentSince}` : '';
    return `idle for ${Math.round(quietMs / 1000)} s (THOPTER_IDLE_TIMEOUT${silent})`;
  }
  const born = Date.parse(record.startedAt ?? record.createdAt);
  if (maxLifetimeMs && now - born >= maxLifetimeMs) {
    return `alive for ${Math.round((now - born) / 1000)} s (THOPTER_MAX_LIFETIME)`;
  }
  return undefined;
}

/** Whether a thopter's observer (providers the hub does not observe) has stopped posting. */
function observerSilent(record: ThopterRecord, intervalMs: number): boolean {
  const session = record.session;
  if (session?.state === 'unknown') return true; // a post from the observer would have replaced it
  const heard = session?.source === 'observer' ? session.updatedAt : (record.runningAt ?? record.createdAt);
  return Date.now() - Date.parse(heard) > SILENT_AFTER_INTERVALS * intervalMs;
}

/**
 * The session of a thopter whose observer is silent: `unknown`, with what the hub sees of the
 * machine itself. A change counts only between two looks of the hub's own (the observer trims and
 * captures its screen its own way), so idle time runs from the last change anyone saw.
 */
async function lookWhileSilent(
  deps: ProcessorDeps,
  record: ThopterRecord,
  machineId: string,
  log: Logger,
): Promise<SessionStatus> {
  const previous = record.session;
  const now = new Date().toISOString();
  let snap: SessionSnapshot | undefined;
  try {
    snap = await deps.provider.snapshot(machineId, await deps.transports.get(machineId));
  } catch (err) {
    log.warn({ err: messageOf(err) }, 'the observer is silent and the session could not be read');
  }
  const changed = snap !== undefined && previous?.state === 'unknown' && snap.screen !== previous.screen;
  const silentSince =
    previous?.silentSince ??
    (previous?.source === 'observer' ? previous.updatedAt : (record.runningAt ?? record.createdAt));
  if (previous?.state !== 'unknown') {
    log.warn({ silentSince }, 'the observer has stopped posting; the hub looks at the session itself');
  }
  const session: SessionStatus = {
    state: 'unknown',
    agentRunning: snap?.agentRunning ?? previous?.agentRunning ?? false,
    lastActivity: changed ? now : (previous?.lastActivity ?? silentSince),
    screen: snap?.screen ?? previous?.screen ?? '',
    updatedAt: now,
    source: 'hub',
    silentSince,
    // The turns come with the observer's posts; the hub's own look does not read them.
    ...(previous?.turns ? { turns: previous.turns } : {}),
  };
  await deps.store.setSession(record.id, session);
  return session;
}
