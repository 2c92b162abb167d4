import { messageOf } from '../errors.js';
import type { ProcessorDeps } from '../processors/deps.js';
import { UsageCounter } from '../usage/reader.js';
import { readTranscripts, transcriptFiles } from './machine.js';

/** A machine that does not answer in this time is not waited for: its teardown goes on. */
const KEEP_TIMEOUT_MS = 30_000;

/**
 * Copies the agent's transcripts off the machine before it goes, so the thopter's session log
 * still opens after it ended. Never fails the teardown: what could not be kept is an event.
 */
export async function keepTranscripts(
  deps: Pick<ProcessorDeps, 'store' | 'provider' | 'transports' | 'transcripts' | 'log' | 'config'>,
  thopterId: string,
  machineId: string,
): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`the machine did not answer in ${KEEP_TIMEOUT_MS / 1000} s`)),
      KEEP_TIMEOUT_MS,
    );
  });
  // Gone already (it crashed, or a teardown that ran before destroyed it): nothing left to copy.
  if (!(await deps.provider.get(machineId).catch(() => null))) return;
  try {
    const copy = async () => {
      const t = await deps.transports.get(machineId);
      const texts = await readTranscripts(t, await transcriptFiles(t));
      if (texts.length) await deps.transcripts.keep(thopterId, texts);
      // The usage of the agent's last moments, which no check may have read yet. A transcript
      // kept only in part counts less than was recorded: the write keeps the larger count.
      const counter = new UsageCounter();
      for (const t of texts) for (const line of t.text.split('\n')) counter.addLine(line);
      await deps.store.setUsage(thopterId, counter.snapshot(), deps.config.prices);
      return texts.length;
    };
    const kept = await Promise.race([copy(), timeout]);
    if (kept) deps.log.debug({ thopter: thopterId, sessions: kept }, 'transcripts kept');
  } catch (err) {
    await deps.store.addEvent(
      thopterId,
      'transcript-lost',
      `the transcript could not be kept: ${messageOf(err)}`,
    );
  } finally {
    clearTimeout(timer);
  }
}
