import { WaitingError, type Job, type Processor } from 'bullmq';
import { AbortedError, ThopterError } from '../errors.js';
import { lifecycleJobId, type JobTable } from '../queues/jobs.js';
import { isFinal } from '../thopters/record.js';
import type { ProcessorDeps } from './deps.js';
import { isHandoff } from './handoff.js';
import { teardown } from './teardown.js';

/** How long a destroy job waits for an active lifecycle job to tear its thopter down. */
const HANDOVER_WAIT_MS = 10 * 60_000;

/**
 * Tears a thopter down. Runs on its own queue, so it never waits for a MAX_THOPTERS slot.
 *
 * While a thopter's lifecycle job is active, that job alone touches the machine: this one marks
 * the request and waits for it, so a destroy can never race a phase that is still creating
 * something. A thopter still in line is taken out of it; one whose lifecycle job is gone (it ended
 * or was lost) is torn down here.
 */
export function destroyProcessor(deps: ProcessorDeps): Processor<JobTable['destroy'], string> {
  return async (job: Job<JobTable['destroy']>, token?: string, signal?: AbortSignal) => {
    const { thopterId, reason, label } = job.data;
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
    if (await store.requestDestroy(thopterId, reason)) {
      await store.addEvent(thopterId, 'destroy-requested', reason);
    }

    const lifecycle = await queues.queues.thopters.getJob(lifecycleJobId(thopterId));
    const state = lifecycle ? await lifecycle.getState() : 'unknown';
    if (state === 'waiting' || state === 'prioritized' || state === 'delayed') {
      try {
        await lifecycle!.remove();
        await teardown(deps, thopterId, 'destroyed', `${reason} (before it started)`);
        log.info('removed from the line');
        return 'removed from the line';
      } catch {
        // It became active in between: its lifecycle job sees the request and tears down.
      }
    }
    if (state === 'completed' || state === 'failed' || state === 'unknown') {
      await teardown(deps, thopterId, 'destroyed', reason);
      return 'torn down';
    }
    const deadline = Date.now() + HANDOVER_WAIT_MS;
    try {
      for (;;) {
        const now = await store.state(thopterId);
        if (!now || isFinal(now)) return `torn down by its lifecycle job`;
        if (Date.now() > deadline) {
          throw new ThopterError('timeout', 'the lifecycle job has not torn the thopter down yet', true);
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
