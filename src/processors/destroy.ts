import { WaitingError, type Job, type Processor } from 'bullmq';
import { AbortedError, ThopterError } from '../errors.js';
import { lifecycleJobId, type JobTable } from '../queues/jobs.js';
import { isFinal } from '../thopters/record.js';
import type { ProcessorDeps } from './deps.js';
import { isHandoff } from './handoff.js';
import { teardown } from './teardown.js';

/** How long one attempt waits for the thopter to be torn down (by its lifecycle job, or here). */
const HANDOVER_WAIT_MS = 10 * 60_000;
/** Flow states in which no phase can still be running. */
const SETTLED = ['completed', 'failed', 'unknown'];

/**
 * Tears a thopter down. Runs on its own queue, so it never waits for a MAX_THOPTERS slot.
 *
 * While a thopter's lifecycle job is active, that job alone touches the machine: this one marks
 * the request and waits for it, so a destroy can never race a phase that is still creating
 * something. A thopter still in line is taken out of it; one whose lifecycle job is not running
 * (in line again after a hand-off, ended, or lost) is torn down here once its flow has settled.
 */
export function destroyProcessor(deps: ProcessorDeps): Processor<JobTable['destroy'], string> {
  return async (job: Job<JobTable['destroy']>, token?: string, signal?: AbortSignal) => {
    const { thopterId, reason, label, save } = job.data;
    const { store, queues } = deps;
    const log = deps.log.child({ thopter: thopterId, issue: label, jobId: job.id });
    const record = await store.get(thopterId);
    if (!record) return 'unknown thopter';
    if (isFinal(record.state)) {
      // Already ended: make sure no machine is left behind anyway.
      await teardown(
        deps,
        thopterId,
        record.state === 'failed' ? 'failed' : 'destroyed',
        record.endReason ?? reason,
      );
      return `already ${record.state}`;
    }
    if (await store.requestDestroy(thopterId, reason, { save })) {
      await store.addEvent(
        thopterId,
        'destroy-requested',
        save === false ? `${reason}; its uncommitted work is discarded` : reason,
      );
    }

    const deadline = Date.now() + HANDOVER_WAIT_MS;
    try {
      for (;;) {
        const now = await store.state(thopterId);
        if (!now || isFinal(now)) return 'torn down';
        const lifecycle = await queues.queues.thopters.getJob(lifecycleJobId(thopterId));
        const state = lifecycle ? await lifecycle.getState() : 'unknown';
        // An active lifecycle job tears down itself. Otherwise this job does, but only once the
        // provisioning flow has settled (its phases stop at the request), so that no phase run
        // elsewhere creates anything after the teardown.
        if (state !== 'active' && SETTLED.includes(await queues.provisionState(thopterId))) {
          const queued = state === 'waiting' || state === 'prioritized' || state === 'delayed';
          const removed = queued
            ? await lifecycle!.remove().then(
                () => true,
                () => false,
              )
            : true;
          if (removed) {
            await teardown(
              deps,
              thopterId,
              'destroyed',
              queued && now === 'queued' ? `${reason} (before it started)` : reason,
            );
            log.info({ lifecycle: state }, 'torn down');
            return 'torn down';
          }
          // It became active in between: its lifecycle job sees the request.
        }
        if (Date.now() > deadline) {
          throw new ThopterError('timeout', 'the thopter has not been torn down yet', true);
        }
        await deps.changes.wait(thopterId, 1000, signal);
      }
    } catch (err) {
      // Shutting down while waiting: another hub (or this one, restarted) picks the job up.
      if (err instanceof AbortedError && isHandoff(signal) && token) {
        await job.moveToWait(token);
        throw new WaitingError();
      }
      throw err;
    }
  };
}
