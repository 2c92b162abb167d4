import { messageOf } from '../errors.js';
import { isFinal } from '../thopters/record.js';
import { keepTranscripts } from '../transcripts/keep.js';
import type { ProcessorDeps } from './deps.js';
import { reportEnd } from './finish.js';
import { renewGitTokenIfDue, revokeGitToken } from './git-token.js';
import { save, skipSave } from './save.js';

/**
 * Saves the agent's work (unless the destroy request said to discard it), destroys a thopter's
 * machine and closes its record. Idempotent: a retry after a crash, or a
 * second caller, finds less to do and ends in the same place. It also destroys any other machine
 * the provider lists for this thopter, so none outlives it.
 */
export async function teardown(
  deps: Pick<
    ProcessorDeps,
    | 'store'
    | 'provider'
    | 'queues'
    | 'transports'
    | 'transcripts'
    | 'log'
    | 'announce'
    | 'config'
    | 'queuePullRequest'
    | 'thopterTokens'
  >,
  thopterId: string,
  final: 'destroyed' | 'failed',
  reason: string,
): Promise<void> {
  const { store, provider, transports, log } = deps;
  const record = await store.get(thopterId);
  const ids = new Set<string>();
  if (record?.machine) ids.add(record.machine.id);
  const listed = (await provider.list()).filter((m) => m.thopterId === thopterId);
  for (const m of listed) ids.add(m.id);
  // Once per thopter: a teardown retried after a destroy error does not wait on a second save. A
  // crash before the outcome is recorded runs it again, which finds nothing more to do.
  if (record?.machine && !isFinal(record.state) && !record.saved) {
    if (record.destroyRequested?.save === false) {
      await skipSave(deps, thopterId, 'the kill asked to discard the work');
    } else if (!listed.some((m) => m.id === record.machine!.id)) {
      await skipSave(deps, thopterId, 'its machine is gone');
    } else {
      // The save pushes with the thopter's token: one that expired while nobody supervised the
      // thopter (a hub down, a kept machine) is replaced first.
      await renewGitTokenIfDue(deps, record, log);
      await save(deps, record, reason);
    }
  }
  // After the save (it pushes with the token), before the machine goes (the token is read from it).
  if (record && record.machine && listed.some((m) => m.id === record.machine!.id))
    await revokeGitToken(deps, record);
  // `stopping` means a machine is going away; a thopter that never had one ends at once.
  if (ids.size > 0 && (await store.setState(thopterId, 'stopping'))) await deps.announce(thopterId);
  if (record?.machine && ids.has(record.machine.id))
    await keepTranscripts(deps, thopterId, record.machine.id);
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
  // Last, so they see what the save pushed; GitHub alone is asked, so the machine need not exist.
  // Every time, not only the first: a teardown retried after a crash still does them (the jobs'
  // ids make a second add a no-op). The report opens the pull request itself first, to link it.
  await deps.queuePullRequest(thopterId);
  await reportEnd(deps, thopterId);
}
