import { UnrecoverableError, WaitingError, type Job, type Processor } from 'bullmq';
import { isRetryable, messageOf } from '../errors.js';
import type { JobTable } from '../queues/jobs.js';
import { isFinal, type PhaseRecord } from '../thopters/record.js';
import type { ProcessorDeps } from './deps.js';
import { isHandoff } from './handoff.js';
import { PHASE_BY_NAME, type PhaseContext } from './phases/index.js';
import { machineOf } from './phases/wait-ready.js';

/** Adapts a BullMQ job to a phase: records its progress on the thopter and decides retry or fail. */
export function phaseProcessor(deps: ProcessorDeps): Processor<JobTable['phase'], PhaseRecord['outcome']> {
  return async (job: Job<JobTable['phase']>, token?: string, signal?: AbortSignal) => {
    const { thopterId, phase: name, label } = job.data;
    const phase = PHASE_BY_NAME[name];
    const { store } = deps;
    const log = deps.log.child({ thopter: thopterId, issue: label, phase: name, jobId: job.id });

    const thopter = await store.get(thopterId);
    if (!thopter || isFinal(thopter.state)) throw new UnrecoverableError(`thopter ${thopterId} has ended`);
    if (thopter.destroyRequested) {
      await store.setPhase(thopterId, name, {
        outcome: 'failed',
        attempts: job.attemptsMade,
        startedAt: new Date().toISOString(),
        endedAt: new Date().toISOString(),
        error: 'not run: the thopter is being destroyed',
      });
      throw new UnrecoverableError(`destroy requested: ${thopter.destroyRequested.reason}`);
    }

    // One signal for the phase: the worker's (hand-off at shutdown) or a destroy meanwhile.
    const abort = new AbortController();
    const onWorkerAbort = () => abort.abort(signal?.reason);
    signal?.addEventListener('abort', onWorkerAbort, { once: true });
    const stopWatching = deps.changes.on(thopterId, () => {
      store
        .destroyRequested(thopterId)
        .then((yes) => yes && abort.abort('destroy'))
        .catch(() => {});
    });

    const attempt = job.attemptsMade + 1;
    const previous = thopter.phases[name];
    const startedAt =
      previous && (previous.outcome === 'running' || previous.outcome === 'retrying')
        ? previous.startedAt
        : new Date().toISOString();
    await store.setPhase(thopterId, name, { outcome: 'running', attempts: attempt, startedAt });
    await deps.announce(thopterId);
    log.info({ attempt }, 'phase started');

    const ctx: PhaseContext = {
      thopter,
      config: deps.config,
      provider: deps.provider,
      store,
      prompts: deps.prompts,
      log,
      signal: abort.signal,
      firstRun: previous === undefined,
      transport: () => deps.transports.get(machineOf(thopter).id),
      thopterTokens: deps.thopterTokens,
      machineLog: async (line) => {
        if (!thopter.machine) return;
        const t = await deps.transports.get(thopter.machine.id);
        await t.appendFile(t.paths.log, `${new Date().toISOString()} [${name}] ${line}\n`);
      },
    };
    const end = (fields: Omit<PhaseRecord, 'attempts' | 'startedAt' | 'endedAt'>) => {
      const endedAt = new Date();
      deps.metrics?.phaseEnded(name, fields.outcome, (endedAt.getTime() - Date.parse(startedAt)) / 1000);
      return store.setPhase(thopterId, name, {
        ...fields,
        attempts: attempt,
        startedAt,
        endedAt: endedAt.toISOString(),
      });
    };

    try {
      const result = await phase.run(ctx);
      const outcome = result.warning ? 'warning' : (result.outcome ?? 'succeeded');
      await end({ outcome, summary: result.summary, error: result.warning });
      if (result.warning) await store.addEvent(thopterId, 'phase-warning', `${name}: ${result.warning}`);
      log.info({ outcome, summary: result.summary }, 'phase finished');
      return outcome;
    } catch (err) {
      if (isHandoff(signal) && token) {
        // Shutting down: back to the head of the line, no stall counted; another hub carries on.
        await job.moveToWait(token);
        throw new WaitingError();
      }
      const destroyed = abort.signal.aborted && abort.signal.reason === 'destroy';
      const message = destroyed ? 'stopped: the thopter is being destroyed' : messageOf(err);
      const final = destroyed || !isRetryable(err) || attempt >= (job.opts.attempts ?? 1);
      if (!final) {
        await store.setPhase(thopterId, name, {
          outcome: 'retrying',
          attempts: attempt,
          startedAt,
          error: message,
        });
        log.warn({ attempt, err: message }, 'phase failed; it will be retried');
        throw err;
      }
      if (phase.optional && !destroyed) {
        await end({ outcome: 'warning', error: message });
        await store.addEvent(thopterId, 'phase-warning', `${name} failed, provisioning goes on: ${message}`);
        log.warn({ err: message }, 'optional phase failed; provisioning goes on');
        return 'warning';
      }
      await end({ outcome: 'failed', error: message });
      await store.addEvent(thopterId, 'phase-failed', `${name}: ${message}`);
      log.error({ err: message }, 'phase failed');
      throw new UnrecoverableError(message);
    } finally {
      stopWatching();
      signal?.removeEventListener('abort', onWorkerAbort);
    }
  };
}
