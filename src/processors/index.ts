import { Worker, type Processor, type WorkerOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import type { ProcessorDeps } from './deps.js';
import { scanAll, type ScannerDeps } from '../scanner/github.js';
import { destroyProcessor } from './destroy.js';
import { githubProcessor, type GitHubProcessorDeps } from './github.js';
import { HANDOFF } from './handoff.js';
import { lifecycleProcessor } from './lifecycle.js';
import { phaseProcessor } from './phase-worker.js';
import { tellProcessor } from './tell.js';

export { TransportPool, type ProcessorDeps } from './deps.js';

export interface HubWorkers {
  lifecycle: Worker;
  phases: Worker;
  destroy: Worker;
  scan: Worker;
  github: Worker;
  tell: Worker;
  /**
   * Hands active jobs back at once (a teardown under way finishes first), then closes every worker.
   * Gives up when Redis has been unreachable for HANDBACK_GIVE_UP_MS.
   */
  close(): Promise<void>;
}

/**
 * Gives a processor a signal that also aborts when the hub shuts down, so that a job a worker
 * fetched just as shutdown began is handed back too (cancelAllJobs only reaches jobs already
 * running), and close() never waits on a lifecycle job that would run forever.
 */
function handingOffAt<T, R>(shutdown: AbortSignal, processor: Processor<T, R>): Processor<T, R> {
  return (job, token, signal) =>
    processor(job, token, signal ? AbortSignal.any([signal, shutdown]) : shutdown);
}

/**
 * A hand-back writes to Redis, and worker connections wait for Redis without limit (BullMQ needs
 * `maxRetriesPerRequest: null`): with Redis gone, closing would wait forever. After this long
 * without Redis the hub stops waiting; the jobs it held keep their locks until those expire, then
 * the next hub recovers them as stalled jobs, which resume idempotently.
 */
export const HANDBACK_GIVE_UP_MS = 3_000;
/** A hand-back with Redis up takes milliseconds (bullmq-notes.md); past this a worker is stuck. */
const HANDBACK_STUCK_MS = 10_000;
/**
 * How long Redis must have been back before workers are closed. Each worker's blocking connection
 * reconnects on its own, after up to 2 s (ioredis's default retryStrategy, which the hub's
 * connections and their duplicates use); closing a worker whose blocking connection is still
 * waiting to reconnect never returns (ioredis emits no `end` for it: seen by experiment, ioredis 5
 * and BullMQ 6.7, in about 1 stop in 5 right after a Redis restart).
 */
const RECONNECT_SETTLE_MS = 2_500;

/** Resolves true once `connection` has not been ready for `ms` in a row; false if `until` settles first. */
function unreachableFor(connection: Redis, ms: number, until: Promise<unknown>): Promise<boolean> {
  return new Promise((resolve) => {
    let since = connection.status === 'ready' ? undefined : Date.now();
    const timer = setInterval(() => {
      if (connection.status === 'ready') since = undefined;
      else since ??= Date.now();
      if (since !== undefined && Date.now() - since >= ms) finish(true);
    }, 100);
    const finish = (gaveUp: boolean) => {
      clearInterval(timer);
      resolve(gaveUp);
    };
    until.then(
      () => finish(false),
      () => finish(false),
    );
  });
}

export function startWorkers(
  deps: ProcessorDeps,
  intake: { scanner: ScannerDeps; github: GitHubProcessorDeps },
  connection: Redis,
): HubWorkers {
  const { config, log, queues } = deps;
  const shutdown = new AbortController();
  const common: WorkerOptions = {
    connection,
    prefix: queues.prefix,
    lockDuration: config.lockDurationMs,
    stalledInterval: config.stalledIntervalMs,
    // A stall is a crashed hub, not a bad job: BullMQ's default (1) would fail a thopter the
    // second time any hub holding it dies.
    maxStalledCount: 1000,
  };
  const lifecycle = new Worker('thopters', handingOffAt(shutdown.signal, lifecycleProcessor(deps)), {
    ...common,
    // The cap is the queue's global concurrency; this only has to be at least as large, so that
    // one surviving hub can adopt every thopter.
    concurrency: config.maxThopters,
  });
  const phases = new Worker('phases', handingOffAt(shutdown.signal, phaseProcessor(deps)), {
    ...common,
    concurrency: config.phaseConcurrency,
  });
  const destroy = new Worker('destroy', handingOffAt(shutdown.signal, destroyProcessor(deps)), {
    ...common,
    concurrency: config.destroyConcurrency,
  });

  // One poll at a time across hubs is the queue's global concurrency; this hub runs one too.
  const scan = new Worker('scan', async () => scanAll(intake.scanner), { ...common, concurrency: 1 });
  const github = new Worker('github', githubProcessor(intake.github), { ...common, concurrency: 5 });
  // A paste takes a moment; several thopters are told at once.
  const tell = new Worker('tell', tellProcessor(deps), { ...common, concurrency: 5 });

  for (const [name, worker] of Object.entries({ lifecycle, phases, destroy, scan, github, tell })) {
    worker.on('error', (err) => log.warn({ worker: name, err: err.message }, 'worker error'));
    // Losing a lock means another hub may now run the job too: stop ours.
    worker.on('lockRenewalFailed', (jobIds: string[]) => {
      log.warn({ worker: name, jobIds }, 'lock renewal failed; cancelling those jobs here');
      for (const id of jobIds) worker.cancelJob(id, 'lock-lost');
    });
  }

  // Since when Redis has answered again after a break: undefined while it does not, 0 when it has
  // not broken off since the workers started.
  let readySince: number | undefined = 0;
  connection.on('close', () => (readySince = undefined));
  connection.on('ready', () => (readySince ??= Date.now()));
  /**
   * Waits until the workers' Redis has been back for RECONNECT_SETTLE_MS. Not back yet (the hub's
   * other connection may be first): up to HANDBACK_GIVE_UP_MS, then Redis counts as down and the
   * close goes on. At once when it never broke off.
   */
  const reconnected = async () => {
    const started = Date.now();
    for (;;) {
      const now = Date.now();
      const settled =
        readySince === undefined
          ? now - started >= HANDBACK_GIVE_UP_MS
          : now - readySince >= RECONNECT_SETTLE_MS;
      if (settled) return;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  };

  return {
    lifecycle,
    phases,
    destroy,
    scan,
    github,
    tell,
    async close() {
      await reconnected();
      shutdown.abort(HANDOFF);
      // (a teardown under way finishes first: it does not listen to the signal)
      const workers = { lifecycle, phases, destroy, scan, github, tell };
      const open = new Set(Object.keys(workers));
      const closing = Promise.all(
        Object.entries(workers).map(([name, w]) => w.close().then(() => void open.delete(name))),
      );
      // A worker that does not close (a blocking connection that would not reconnect, BullMQ's
      // runRetryDelay of 15 s after a fetch failed): past HANDBACK_STUCK_MS with Redis up the stop
      // goes on without it (closing its connections ends it); a job it still held is recovered by
      // the next hub as stalled, as when Redis is unreachable.
      let timer: NodeJS.Timeout | undefined;
      const stuck = new Promise<'stuck'>((resolve) => {
        timer = setTimeout(() => resolve('stuck'), HANDBACK_STUCK_MS);
      });
      const outcome = await Promise.race([
        closing.then(() => 'closed' as const),
        unreachableFor(connection, HANDBACK_GIVE_UP_MS, Promise.race([closing, stuck])).then((gaveUp) =>
          gaveUp ? ('unreachable' as const) : ('closed' as const),
        ),
        stuck,
      ]);
      clearTimeout(timer);
      if (outcome === 'unreachable')
        log.warn(
          'Redis is unreachable: active thopters were not handed back; the next hub recovers them once their locks expire',
        );
      else if (outcome === 'stuck')
        log.warn(
          { workers: [...open] },
          'workers still closing: the stop goes on without them; the next hub recovers any job they held',
        );
    },
  };
}
