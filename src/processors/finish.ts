import path from 'node:path';
import { messageOf } from '../errors.js';
import type { ReportKey } from '../github/report.js';
import type { Logger } from '../log.js';
import { labelOf } from '../scanner/intake.js';
import type { FinishState, SessionStatus, ThopterRecord } from '../thopters/record.js';
import { TURNS_FILE, turnMessage } from '../status/turns.js';
import { lastAgentMessage } from '../transcripts/last-message.js';
import { readTranscripts, transcriptFiles } from '../transcripts/machine.js';
import type { ProcessorDeps } from './deps.js';

/** Reading the last message must not hold the supervision: past this, the report goes without it. */
const READ_TIMEOUT_MS = 15_000;
/**
 * Claude Code may append a turn's last transcript entries a moment after its Stop hook ran: a turn
 * whose last message comes from the transcript (a Claude Code that does not give it to the hook)
 * and cannot be read yet, or reads as the one before, is read again at the next checks for this
 * long before it counts as a turn that said nothing new.
 */
const TRANSCRIPT_LAG_MS = 30_000;

/**
 * The finish line, as the thopter's lifecycle job sees it (design.md, "Closing the loop"): when the
 * agent's turn ends (its Stop hook) or its process exits, the hub reads what it said last and
 * reports on the issue. Only the lifecycle job calls this, and it records what it acted on before
 * queuing the report (whose job id is the thopter and the event), so each event is reported once
 * whichever hub runs the job, and after a crash.
 */
export async function actOnAgentNews(
  deps: ProcessorDeps,
  record: ThopterRecord,
  session: SessionStatus | undefined,
  log: Logger,
): Promise<void> {
  if (record.state !== 'running' || !record.machine) return;
  const finish: FinishState = record.finish ?? { reported: 0 };
  const ended = record.turns?.count ?? 0;
  // A session the hub cannot see (`unknown`) or that is gone says nothing about the agent itself.
  const exited =
    !finish.agentExitedAt &&
    session !== undefined &&
    session.state !== 'unknown' &&
    session.state !== 'stopped'
      ? !session.agentRunning
      : false;
  if (ended <= finish.reported && !exited) return;
  const read = await lastMessage(deps, record.machine.id, exited ? 0 : ended, log);
  const said = read?.said;
  // Not there yet (no message, or the one before, from a transcript that may lag): read again at
  // the next checks while the turn is fresh. Counting the turn now would report it without its
  // words, or not at all. What the Stop hook was given is the turn's own last message.
  if (
    !exited &&
    !read?.fromHook &&
    (said === undefined || said.text === finish.lastMessage?.text) &&
    turnIsFresh(record)
  ) {
    log.debug({ turns: ended }, "the turn's last message is not in the transcript yet; reading again");
    return;
  }
  // The report quotes the transcript as it stands now: its usage is read as far. (Claude Code may
  // write its transcript a moment after the turn ended, later than the check that saw the turn.)
  if (deps.provider.usage) {
    try {
      const totals = await deps.provider.usage(record.machine.id);
      await deps.store.setUsage(record.id, totals, deps.config.prices);
    } catch (err) {
      log.warn({ err: messageOf(err) }, "the agent's usage could not be read");
    }
  }
  const next: FinishState = {
    ...finish,
    reported: Math.max(ended, finish.reported),
    ...(exited ? { agentExitedAt: new Date().toISOString() } : {}),
    ...(said ? { lastMessage: said } : {}),
  };
  const key: ReportKey = exited ? 'exit' : `turn-${ended}`;
  // Told messages this turn answers: delivered before it began (processors/tell.ts). Marked before
  // the finish line moves on, so the report names them, a later turn does not again, and a run
  // resumed after a crash in between still finds them.
  const answering = exited
    ? []
    : (record.told ?? []).filter(
        (m) =>
          m.answeredIn === key ||
          (m.state === 'delivered' && !m.answeredIn && ended > (m.turnsAtDelivery ?? 0)),
      );
  for (const m of answering) if (!m.answeredIn) await deps.store.moveTold(record.id, m, { answeredIn: key });
  await deps.store.setFinish(record.id, next);
  // Its work may now have commits the default branch lacks: its branch gets its pull request
  // (a GitHub thopter's report below opens it too, to link it).
  await deps.queuePullRequest(record.id);
  if (exited)
    await deps.store.addEvent(record.id, 'agent-exited', 'the agent process exited; its terminal stays');
  // A turn that brought nothing new (the same last words) is not worth a notification; one that
  // answers a message is always news.
  const news =
    exited || answering.length > 0 || (said !== undefined && said.text !== finish.lastMessage?.text);
  if (!news || record.request.source !== 'github') return;
  await deps.queues.enqueue('report', { thopterId: record.id, label: labelOf(record.request), key });
  log.info({ key }, 'reporting on the issue');
}

/** Whether the last turn ended so recently that its transcript may still be written. */
function turnIsFresh(record: ThopterRecord): boolean {
  const at = record.turns?.lastEndedAt;
  const age = at === undefined ? NaN : Date.now() - Date.parse(at);
  // A machine clock ahead of the hub's (a negative age) is not waited for.
  return age >= 0 && age < TRANSCRIPT_LAG_MS;
}

/**
 * The agent's last message: for an ended turn, as its Stop hook was given it (status/turns.ts;
 * `fromHook`); else, or from a Claude Code that does not pass it, from the newest transcript on its
 * machine. Undefined if neither can be read.
 */
async function lastMessage(
  deps: ProcessorDeps,
  machineId: string,
  turn: number,
  log: Logger,
): Promise<{ said: { text: string; at?: string } | undefined; fromHook: boolean } | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    const read = async () => {
      const t = await deps.transports.get(machineId);
      if (turn > 0) {
        const turns = await t.readFile(path.posix.join(t.paths.home, TURNS_FILE)).catch(() => undefined);
        const said = turns && turnMessage(turns.toString('utf8'), turn);
        if (said) return { said, fromHook: true };
      }
      // The newest session is the one the agent is in.
      const said = lastAgentMessage(await readTranscripts(t, (await transcriptFiles(t)).slice(-1)));
      return { said, fromHook: false };
    };
    return await Promise.race([
      read(),
      new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), READ_TIMEOUT_MS))),
    ]);
  } catch (err) {
    log.warn({ err: messageOf(err) }, "the agent's transcript could not be read");
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

/** Queues the report of a thopter's end (from its teardown, on whichever path it ended). */
export async function reportEnd(
  deps: Pick<ProcessorDeps, 'queues' | 'store'>,
  thopterId: string,
): Promise<void> {
  const record = await deps.store.get(thopterId);
  if (record?.request.source !== 'github') return;
  await deps.queues.enqueue('report', { thopterId, label: labelOf(record.request), key: 'end' });
}
