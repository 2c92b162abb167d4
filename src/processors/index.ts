import { Worker, type WorkerOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import type { ProcessorDeps } from './deps.js';
import { destroyProcessor } from './destroy.js';
import { HANDOFF } from './handoff.js';
import { lifecycleProcessor } from './lifecycle.js';
import { phaseProcessor } from './phase-worker.js';

export { TransportPool, type ProcessorDeps } from './deps.js';

export interface HubWorkers {
  lifecycle: Worker;
  phases: Worker;
  destroy: Worker;
  /** Hands active jobs back at once (a teardown under way finishes first), then closes every worker. */
  close(): Promise<void>;
}

export function startWorkers(deps: ProcessorDeps, connection: Redis): HubWorkers {
  const { config, log, queues } = deps;
  const common: WorkerOptions = {
    connection,
    prefix: queues.prefix,
    lockDuration: config.lockDurationMs,
    stalledInterval: config.stalledIntervalMs,
    // A stall is a crashed hub, not a bad job: BullMQ's default (1) would fail a thopter the
    // second time any hub holding it dies.
    maxStalledCount: 1000,
  };
  const lifecycle = new Worker('thopters', lifecycleProcessor(deps), {
    ...common,
    // The cap is the queue's global concurrency; this only has to be at least as large, so that
    // one surviving hub can adopt every thopter.
    concurrency: config.maxThopters,
  });
  const phases = new Worker('phases', phaseProcessor(deps), {
    ...common,
    concurrency: config.phaseConcurrency,
  });
  const destroy = new Worker('destroy', destroyProcessor(deps), {
    ...common,
    concurrency: config.destroyConcurrency,
  });

  for (const [name, worker] of Object.entries({ lifecycle, phases, destroy })) {
    worker.on('error', (err) => log.warn({ worker: name, err: err.message }, 'worker error'));
    // Losing a lock means another hub may now run the job too: stop ours.
    worker.on('lockRenewalFailed', (jobIds: string[]) => {
      log.warn({ worker: name, jobIds }, 'lock renewal failed; cancelling those jobs here');
      for (const id of jobIds) worker.cancelJob(id, 'lock-lost');
    });
  }

  return {
    lifecycle,
    phases,
    destroy,
    async close() {
      lifecycle.cancelAllJobs(HANDOFF);
      phases.cancelAllJobs(HANDOFF);
      destroy.cancelAllJobs(HANDOFF);
      await Promise.all([lifecycle.close(), phases.close(), destroy.close()]);
    },
  };
}
