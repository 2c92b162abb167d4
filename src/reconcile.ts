import type { Logger } from './log.js';
import type { Provider } from './providers/types.js';
import { lifecycleJobId, type HubQueues } from './queues/index.js';
import { labelOf } from './scanner/intake.js';
import { isFinal } from './thopters/record.js';
import type { ThopterStore } from './thopters/store.js';

/**
 * Brings the provider, the records and the queues back into agreement (invariants 3 and 4):
 * a machine whose thopter has ended or is unknown is destroyed; a queued record whose lifecycle
 * job is missing gets it back; a live record whose lifecycle job is over is torn down.
 * Thopters ended longer ago than THOPTER_RETENTION are deleted. Every step is idempotent, so any
 * number of hubs may run it at once.
 */
export async function reconcile(deps: {
  store: ThopterStore;
  queues: HubQueues;
  provider: Provider;
  log: Logger;
  /** THOPTER_RETENTION: thopters that ended longer ago than this are deleted. */
  retentionMs?: number;
}) {
  const { store, queues, provider, log } = deps;
  const report = { machinesDestroyed: 0, requeued: 0, tornDown: 0, pruned: 0 };

  const machines = await provider.list();
  for (const machine of machines) {
    const record = machine.thopterId ? await store.get(machine.thopterId) : null;
    // Adopted: the live thopter whose record names this machine carries on with it (after a
    // restart the hub knows it again from Redis plus the provider's list).
    if (record && !isFinal(record.state) && record.machine?.id === machine.id) continue;
    log.warn(
      { machine: machine.id, providerId: machine.providerId, thopter: machine.thopterId || undefined },
      'destroying a machine no live thopter owns',
    );
    await provider.destroy(machine.id);
    report.machinesDestroyed++;
  }
  const listed = new Set(machines.map((m) => m.id));

  for (const record of await store.list({
    limit: 10_000,
    states: ['queued', 'provisioning', 'running', 'kept', 'stopping'],
  })) {
    const job = await queues.queues.thopters.getJob(lifecycleJobId(record.id));
    const state = job ? await job.getState() : 'unknown';
    const label = labelOf(record.request);
    if (record.state === 'queued' && state === 'unknown') {
      await queues.enqueue(
        'lifecycle',
        { thopterId: record.id, label },
        { priority: record.request.priority },
      );
      report.requeued++;
    } else if (state === 'completed' || state === 'failed' || state === 'unknown') {
      await queues.enqueue('destroy', {
        thopterId: record.id,
        label,
        reason: 'its lifecycle job ended without closing it',
      });
      report.tornDown++;
    } else if (
      state !== 'active' &&
      record.machine?.state === 'created' &&
      !listed.has(record.machine.id) &&
      !(await provider.get(record.machine.id))
    ) {
      // Its machine is gone and no job is watching it: close the record.
      await queues.enqueue('destroy', { thopterId: record.id, label, reason: 'its machine is gone' });
      report.tornDown++;
    }
  }
  if (deps.retentionMs !== undefined) {
    report.pruned = (await store.pruneEnded(Date.now() - deps.retentionMs)).length;
  }
  if (report.machinesDestroyed || report.requeued || report.tornDown || report.pruned)
    log.info(report, 'reconciled');
  return report;
}
