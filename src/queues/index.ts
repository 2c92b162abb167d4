import { createHash } from 'node:crypto';
import { FlowProducer, Queue, type FlowJob, type JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from '../log.js';
import { PHASES } from '../processors/phases/index.js';
import {
  commentDedupId,
  destroyDedupId,
  pullRequestDedupId,
  lifecycleJobId,
  tellJobId,
  SCAN_SCHEDULER_ID,
  phaseJobId,
  PRIORITY,
  QUEUE_OF,
  type JobName,
  type JobTable,
  type QueueName,
} from './jobs.js';

export * from './jobs.js';

const DAY_S = 86_400;

/** Every write to GitHub is retried with backoff: a comment is never lost. */
const GITHUB_RETRIES: JobsOptions = {
  priority: PRIORITY.github,
  attempts: 8,
  backoff: { type: 'exponential', delay: 2000 },
};

/** Default options per job name; `enqueue` callers add only what is particular to one job. */
const JOB_DEFAULTS: { [N in JobName]: JobsOptions } = {
  lifecycle: {
    // A lifecycle job waits out errors itself once a machine may exist (see lifecycle.ts); the
    // attempts are the net for anything else, and it resumes from the record each time.
    attempts: 20,
    backoff: { type: 'exponential', delay: 5000 },
    // Kept so that a second add with the same id stays a no-op for a week.
    removeOnComplete: { age: 7 * DAY_S },
    removeOnFail: { age: 30 * DAY_S },
  },
  phase: {
    removeOnComplete: { age: DAY_S },
    removeOnFail: { age: 7 * DAY_S },
  },
  scan: {
    priority: PRIORITY.scan,
    removeOnComplete: { count: 100 },
    removeOnFail: { count: 100 },
  },
  comment: {
    ...GITHUB_RETRIES,
    removeOnComplete: { age: DAY_S, count: 1000 },
    removeOnFail: { age: 7 * DAY_S },
  },
  reply: {
    ...GITHUB_RETRIES,
    // Kept a month: the reply's job id is what makes a second detection post nothing.
    removeOnComplete: { age: 30 * DAY_S },
    removeOnFail: { age: 30 * DAY_S },
  },
  report: {
    ...GITHUB_RETRIES,
    // Kept a month: the report's job id is what makes a second add, from any hub, post nothing.
    removeOnComplete: { age: 30 * DAY_S },
    removeOnFail: { age: 30 * DAY_S },
  },
  'pull-request': {
    ...GITHUB_RETRIES,
    removeOnComplete: { age: DAY_S, count: 1000 },
    removeOnFail: { age: 7 * DAY_S },
  },
  tell: {
    priority: PRIORITY.tell,
    // Retried only while nothing was pasted (processors/tell.ts): a retry never pastes twice.
    attempts: 6,
    backoff: { type: 'exponential', delay: 1000 },
    // Kept a month: the job id is what makes a second add of the same message a no-op.
    removeOnComplete: { age: 30 * DAY_S },
    removeOnFail: { age: 30 * DAY_S },
  },
  destroy: {
    priority: PRIORITY.destroy,
    attempts: 5,
    backoff: { type: 'exponential', delay: 2000 },
    removeOnComplete: { age: DAY_S, count: 1000 },
    removeOnFail: { age: 7 * DAY_S },
  },
};

/** How a second add of the same thing is recognised, per job name. */
function identityOf(name: Exclude<JobName, 'phase'>, data: JobTable[Exclude<JobName, 'phase'>]): JobsOptions {
  switch (name) {
    case 'lifecycle':
      return { jobId: lifecycleJobId((data as JobTable['lifecycle']).thopterId) };
    case 'destroy':
      return { deduplication: { id: destroyDedupId((data as JobTable['destroy']).thopterId) } };
    case 'comment':
      // One edit running and the latest one waiting: the comment always ends on the last state.
      return {
        deduplication: {
          id: commentDedupId((data as JobTable['comment']).thopterId),
          keepLastIfActive: true,
        },
      };
    case 'pull-request':
      // One running and the latest waiting: a turn that ends meanwhile is looked at afterwards.
      return {
        deduplication: {
          id: pullRequestDedupId((data as JobTable['pull-request']).thopterId),
          keepLastIfActive: true,
        },
      };
    case 'reply':
      return {
        jobId: `reply.${createHash('sha256')
          .update((data as JobTable['reply']).key)
          .digest('hex')
          .slice(0, 24)}`,
      };
    case 'report': {
      const { thopterId, key } = data as JobTable['report'];
      return { jobId: `report.${thopterId}.${key}` };
    }
    case 'tell': {
      const { thopterId, key } = data as JobTable['tell'];
      return { jobId: tellJobId(thopterId, createHash('sha256').update(key).digest('hex').slice(0, 24)) };
    }
    case 'scan':
      return {};
  }
}

/** The hub's queues, and the only way onto them. */
export class HubQueues {
  readonly queues: Record<QueueName, Queue>;
  private readonly flows: FlowProducer;

  constructor(
    private readonly connection: Redis,
    readonly prefix: string,
    log: Logger,
  ) {
    const make = (name: QueueName) => {
      const q = new Queue(name, { connection, prefix });
      q.on('error', (err) => log.warn({ queue: name, err: err.message }, 'queue error'));
      return q;
    };
    this.queues = {
      thopters: make('thopters'),
      phases: make('phases'),
      destroy: make('destroy'),
      scan: make('scan'),
      github: make('github'),
      tell: make('tell'),
    };
    this.flows = new FlowProducer({ connection, prefix });
    this.flows.on('error', (err) => log.warn({ err: err.message }, 'flow producer error'));
  }

  /** The MAX_THOPTERS cap lives in Redis and outlasts us: set it at every start. */
  async start(maxThopters: number): Promise<void> {
    await this.queues.thopters.setGlobalConcurrency(maxThopters);
    // Iterations overlap when a poll outlasts the interval: one at a time, across every hub.
    await this.queues.scan.setGlobalConcurrency(1);
  }

  /** Polls every `intervalS` seconds; upserting from several hubs still makes one scheduler. */
  async schedulePolling(intervalS: number): Promise<void> {
    const data: JobTable['scan'] = { trigger: 'schedule' };
    await this.queues.scan.upsertJobScheduler(
      SCAN_SCHEDULER_ID,
      { every: intervalS * 1000 },
      { name: 'scan', data, opts: { ...JOB_DEFAULTS.scan } },
    );
  }

  /** Adds a job. For lifecycle jobs the id derives from the thopter, so a second add is a no-op. */
  async enqueue<N extends Exclude<JobName, 'phase'>>(name: N, data: JobTable[N], opts: JobsOptions = {}) {
    const queue = this.queues[QUEUE_OF[name]];
    const identity = identityOf(name, data);
    const options = { ...JOB_DEFAULTS[name], ...identity, ...opts };
    if (options.priority === undefined) throw new Error(`every ${name} job needs a priority`);
    return queue.add(name, data, options);
  }

  /**
   * The provisioning flow: a chain of single children, so the leaf (create-machine) runs first
   * and the root (launch-agent) last. Ids derive from the thopter, so a resumed lifecycle job can
   * add it again and nothing changes.
   */
  async addProvisionFlow(thopterId: string, label: string, priority: number) {
    let child: FlowJob | undefined;
    for (const phase of PHASES) {
      const data: JobTable['phase'] = { thopterId, label, phase: phase.name };
      child = {
        name: 'phase',
        queueName: QUEUE_OF.phase,
        data,
        opts: {
          ...JOB_DEFAULTS.phase,
          jobId: phaseJobId(thopterId, phase.name),
          priority,
          attempts: phase.attempts,
          backoff: { type: 'exponential', delay: phase.backoffMs },
          // A phase that fails fails every phase after it, up to the root. An optional phase
          // never fails for its own reasons (it returns a warning), only when one before it did,
          // so it must pass that failure on too: with ignoreDependencyOnFailure the chain would
          // carry on past a failed clone.
          failParentOnFailure: true,
        },
        children: child ? [child] : undefined,
      };
    }
    if (!child) throw new Error('no phases are defined');
    return this.flows.add(child);
  }

  /** The state of the flow's root job: 'completed', 'failed', 'unknown' (absent), or still running. */
  async provisionState(thopterId: string): Promise<string> {
    const last = PHASES[PHASES.length - 1]!;
    return this.queues.phases.getJobState(phaseJobId(thopterId, last.name));
  }

  /**
   * 1-based place in line among waiting thopters, or null when the thopter is not waiting.
   * Every lifecycle job has a priority, so all of them wait in BullMQ's `prioritized` sorted set,
   * ordered by priority and then arrival: the rank there is the place in line.
   */
  async queuePosition(thopterId: string): Promise<number | null> {
    const rank = await this.connection.zrank(
      `${this.prefix}:thopters:prioritized`,
      lifecycleJobId(thopterId),
    );
    return rank === null ? null : rank + 1;
  }

  /** Every waiting thopter's place in line (1-based), in one call: what the dashboard shows. */
  async queueOrder(): Promise<Map<string, number>> {
    const ids: string[] = await this.connection.zrange(`${this.prefix}:thopters:prioritized`, '0', '-1');
    const order = new Map<string, number>();
    ids.forEach((jobId, i) => order.set(jobId, i + 1));
    return order;
  }

  async close(): Promise<void> {
    await Promise.all([...Object.values(this.queues).map((q) => q.close()), this.flows.close()]);
  }
}
