import { messageOf } from '../errors.js';
import type { ProcessorDeps } from './deps.js';

/**
 * Destroys a thopter's machine and closes its record. Idempotent: a retry after a crash, or a
 * second caller, finds less to do and ends in the same place. It also destroys any other machine
 * the provider lists for this thopter, so none outlives it.
 */
export async function teardown(
  deps: Pick<ProcessorDeps, 'store' | 'provider' | 'transports' | 'log' | 'announce' | 'queuePullRequest'>,
  thopterId: string,
  final: 'destroyed' | 'failed',
  reason: string,
): Promise<void> {
  const { store, provider, transports, log } = deps;
  const record = await store.get(thopterId);
  const ids = new Set<string>();
  if (record?.machine) ids.add(record.machine.id);
  for (const m of await provider.list()) if (m.thopterId === thopterId) ids.add(m.id);
  // `stopping` means a machine is going away; a thopter that never had one ends at once.
  if (ids.size > 0 && (await store.setState(thopterId, 'stopping'))) await deps.announce(thopterId);
  for (const id of ids) {
    await transports.release(id);
    try {
      await provider.destroy(id);
    } catch (err) {
      await store.addEvent(thopterId, 'destroy-failed', `machine ${id}: ${messageOf(err)}`);
      throw err; // retried by the job; the record stays `stopping` until it goes through
    }
  }
  if (await store.finish(thopterId, final, reason)) {
    await store.addEvent(thopterId, final, reason);
    await deps.announce(thopterId);
    log.info({ thopter: thopterId, machines: [...ids], final, reason }, 'thopter torn down');
  }
  // Last, so it sees what the save pushed; GitHub alone is asked, so the machine need not exist.
  await deps.queuePullRequest(thopterId);
}
