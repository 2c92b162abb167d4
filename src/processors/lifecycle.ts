import { WaitingError, type Job, type Processor } from 'bullmq';
import { messageOf } from '../errors.js';
import type { Logger } from '../log.js';
import type { JobTable } from '../queues/jobs.js';
import { nextActivity } from '../status/activity.js';
import { isFinal, type ThopterRecord } from '../thopters/record.js';
import type { ProcessorDeps } from './deps.js';
import { isHandoff } from './handoff.js';
import { PHASES } from './phases/index.js';
import { teardown } from './teardown.js';

/**
 * A lifecycle job wakes at every change of its record (a phase result, a destroy request); this
 * is only how long it waits when nothing changes, the net for a missed notification.
 */
const WAKE_MS = 1000;

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
        await job.moveToWait(token);
        log.info('handed back for another hub to carry on');
        throw new WaitingError();
      }
      log.error({ err: messageOf(err) }, 'lifecycle error; the job will be retried');
      throw err;
    }
  };
}

async function live(deps: ProcessorDeps, job: Job<JobTable['lifecycle']>, signal: AbortSignal, log: Logger) {
  const { store } = deps;
  const id = job.data.thopterId;
  const record = await store.get(id);
  if (!record || isFinal(record.state)) return 'already ended';

  if (record.state === 'queued') {
    await store.setState(id, 'provisioning', 'startedAt');
    await store.addEvent(id, 'provisioning', 'a slot is free: provisioning started');
    log.info('provisioning started');
  } else {
    await store.addEvent(id, 'resumed', `resumed while ${record.state} (attempt ${job.attemptsMade + 1})`);
    log.info({ state: record.state }, 'resumed');
  }

  if (record.state === 'stopping') {
    await teardown(deps, id, 'destroyed', record.destroyRequested?.reason ?? 'destroyed');
    return 'destroyed';
  }

  if (record.state === 'queued' || record.state === 'provisioning') {
    const outcome = await provision(deps, record, job.data.label, signal);
    if (outcome.kind === 'failed') {
      log.warn({ reason: outcome.reason }, 'provisioning failed; tearing down');
      await teardown(deps, id, 'failed', outcome.reason);
      return 'failed';
    }
    if (outcome.kind === 'destroy') {
      await teardown(deps, id, 'destroyed', outcome.reason);
      return 'destroyed';
    }
    await store.setState(id, 'running', 'runningAt');
    await store.addEvent(id, 'running', 'the agent is running');
    log.info('running');
  }
  return supervise(deps, id, signal, log);
}

type ProvisionOutcome =
  { kind: 'provisioned' } | { kind: 'failed'; reason: string } | { kind: 'destroy'; reason: string };

async function provision(
  deps: ProcessorDeps,
  record: ThopterRecord,
  label: string,
  signal: AbortSignal,
): Promise<ProvisionOutcome> {
  const { store, queues } = deps;
  const id = record.id;
  await queues.addProvisionFlow(id, label, record.request.priority);
  const last = PHASES[PHASES.length - 1]!.name;
  for (;;) {
    const current = await store.get(id);
    if (!current || isFinal(current.state)) return { kind: 'destroy', reason: 'the record ended meanwhile' };
    const state = await queues.provisionState(id);
    const lastOutcome = current.phases[last]?.outcome;
    if (state === 'completed' || lastOutcome === 'succeeded' || lastOutcome === 'warning') {
      return { kind: 'provisioned' };
    }
    if (state === 'failed') {
      // Wait for the flow to settle before tearing down, so no phase creates anything afterwards.
      if (current.destroyRequested) return { kind: 'destroy', reason: current.destroyRequested.reason };
      const failed = PHASES.find((p) => current.phases[p.name]?.outcome === 'failed');
      const error = failed ? current.phases[failed.name]?.error : undefined;
      return {
        kind: 'failed',
        reason: failed ? `${failed.name} failed: ${error ?? 'unknown error'}` : 'provisioning failed',
      };
    }
    if (state === 'unknown') {
      // The flow is gone (removed by age while this job was stalled): add it again.
      await queues.addProvisionFlow(id, label, record.request.priority);
    }
    await deps.changes.wait(id, WAKE_MS, signal);
  }
}

async function supervise(deps: ProcessorDeps, id: string, signal: AbortSignal, log: Logger): Promise<string> {
  const { store, provider, config } = deps;
  let nextCheck = 0;
  for (;;) {
    if (await store.destroyRequested(id)) {
      const record = await store.get(id);
      const reason = record?.destroyRequested?.reason ?? 'destroyed';
      log.info({ reason }, 'destroying');
      await teardown(deps, id, 'destroyed', reason);
      return 'destroyed';
    }
    if (Date.now() >= nextCheck) {
      nextCheck = Date.now() + config.statusIntervalMs;
      const record = await store.get(id);
      if (!record || isFinal(record.state)) return 'ended';
      const reason = await check(deps, record);
      if (reason === 'machine-gone') {
        await teardown(deps, id, 'destroyed', 'the machine disappeared');
        return 'machine gone';
      }
      if (reason) {
        await store.requestDestroy(id, reason);
        continue;
      }
    }
    await deps.changes.wait(id, Math.max(1, Math.min(WAKE_MS, nextCheck - Date.now())), signal);
  }

  /** Observes the session (local thopters) and returns a reason to destroy, if there is one. */
  async function check(deps: ProcessorDeps, record: ThopterRecord): Promise<string | undefined> {
    const machineId = record.machine?.id;
    if (!machineId || !(await provider.get(machineId))) return 'machine-gone';
    let session = record.session;
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
        };
        await deps.store.setSession(id, session);
      } catch (err) {
        log.warn({ err: messageOf(err) }, 'could not read the session');
      }
    }
    const now = Date.now();
    const { idleTimeoutMs, maxLifetimeMs } = config;
    // Idle time counts from the last screen change, so THOPTER_IDLE_TIMEOUT=30m means 30 quiet minutes.
    const quietMs = session?.state === 'idle' ? now - Date.parse(session.lastActivity) : 0;
    if (idleTimeoutMs && quietMs >= idleTimeoutMs) {
      return `idle for ${Math.round(quietMs / 1000)} s (THOPTER_IDLE_TIMEOUT)`;
    }
    const born = Date.parse(record.startedAt ?? record.createdAt);
    if (maxLifetimeMs && now - born >= maxLifetimeMs) {
      return `alive for ${Math.round((now - born) / 1000)} s (THOPTER_MAX_LIFETIME)`;
    }
    return undefined;
  }
}
