import { createHash } from 'node:crypto';
import path from 'node:path';
import { UnrecoverableError, type Job, type Processor } from 'bullmq';
import { messageOf, sleep, ThopterError } from '../errors.js';
import { SESSION } from '../providers/types.js';
import type { JobTable } from '../queues/jobs.js';
import { labelOf } from '../scanner/intake.js';
import { inputBox } from '../status/screen.js';
import { parseTurns, PROMPT_MARK, TURNS_FILE, waitsByMarks, type Turns } from '../status/turns.js';
import type { ThopterRecord, ToldMessage } from '../thopters/record.js';
import type { ProcessorDeps } from './deps.js';

/** A message longer than this is refused: it is a paste into a terminal, not a file transfer. */
export const MAX_TELL_CHARS = 20_000;
/** One tmux call on the machine; past this the connection is taken as broken. */
const TMUX_TIMEOUT_MS = 15_000;

export interface TellInput {
  /**
   * Makes the message be told once, whoever calls and however often: the command that asked
   * (`github:owner/repo#42@comment:123`), a review (`review:owner/repo#7:55`), `budget-90`.
   */
  key: string;
  /** What the agent reads, as one message: several lines stay one message. */
  text: string;
  /** The GitHub login of who says it (no `@`); absent when the hub itself speaks. */
  from?: string;
  /** Where it was written (the comment's URL): the report that answers it links there. */
  url?: string;
}

/**
 * `told`: recorded and its delivery queued (or, for a key told before, queued already: nothing
 * changes); `ended`: the thopter has ended, nothing is recorded; `unknown`: no such thopter.
 */
export type TellOutcome = 'told' | 'ended' | 'unknown';

/**
 * The one way to say something to a live thopter's agent. Records the message on the thopter
 * (once per `input.key`: a second call with the same key, from any hub, changes nothing) and queues
 * the `tell` job that pastes it into the agent's session. Whether it arrived is on the record
 * (`told`, processors/tell.ts) and in the thopter's events; the next turn's report answers it.
 * Throws ThopterError `bad-input` for an empty or oversized text.
 */
export async function tellAgent(
  deps: Pick<ProcessorDeps, 'store' | 'queues'>,
  thopterId: string,
  input: TellInput,
): Promise<TellOutcome> {
  const text = input.text.trim();
  if (!text) throw new ThopterError('bad-input', 'the message is empty: write what the agent should read');
  if (text.length > MAX_TELL_CHARS) {
    throw new ThopterError(
      'bad-input',
      `the message has ${text.length} characters, more than ${MAX_TELL_CHARS}: shorten it, or put the long part in a file the agent can read`,
    );
  }
  const message: ToldMessage = {
    key: input.key,
    text,
    ...(input.from ? { from: input.from } : {}),
    ...(input.url ? { url: input.url } : {}),
    at: new Date().toISOString(),
    state: 'queued',
  };
  const recorded = await deps.store.addTold(thopterId, message);
  if (recorded === 'ended' || recorded === 'unknown') return recorded;
  const record = await deps.store.get(thopterId);
  if (recorded === 'recorded') {
    await deps.store.addEvent(thopterId, 'told', `${whoSaid(message)}: ${preview(text)}`);
  }
  // Queued again for a key recorded before: a crash may have come between the record and the
  // job. The job id derives from the key, so this is a no-op when the job exists.
  const label = record ? labelOf(record.request) : thopterId;
  await deps.queues.enqueue('tell', { thopterId, label, key: input.key });
  return 'told';
}

/** "@alice" or "the hub": who a told message is from, in events and reports. */
export const whoSaid = (m: Pick<ToldMessage, 'from'>) => (m.from ? `@${m.from}` : 'the hub');

function preview(text: string): string {
  const first = text.split('\n')[0]!;
  const lines = text.split('\n').length;
  const shown = first.length > 80 ? `${first.slice(0, 80)}…` : first;
  return lines > 1 ? `“${shown}” (${lines} lines)` : `“${shown}”`;
}

/**
 * Delivers one told message: a bracketed paste into the thopter's tmux session, then Enter, so the
 * agent reads the whole text as one message. Through the transport with argv arrays and the text on
 * stdin: it is never parsed by a shell, never a process argument, and works alike on every provider.
 *
 * At most once: a message pasted twice is a bug, one lost is reported. Everything before the paste
 * (looking at the session, loading the text into a tmux buffer) changes nothing the agent sees, and
 * is retried. The message is marked `delivering` before the paste; a paste that fails, or a run that
 * finds the message `delivering` (a hub died mid-paste), marks it `undelivered` with why, and never
 * pastes again.
 */
export function tellProcessor(deps: ProcessorDeps): Processor<JobTable['tell'], string> {
  return async (job: Job<JobTable['tell']>, _token?: string, signal?: AbortSignal) => {
    const { thopterId, key, label } = job.data;
    const { store } = deps;
    const log = deps.log.child({ thopter: thopterId, issue: label, jobId: job.id });
    const message = await store.told(thopterId, key);
    if (!message) return 'no such message';
    if (message.state === 'delivering') {
      await undeliverable(
        deps,
        thopterId,
        message,
        'the hub stopped while pasting it: it may or may not have reached the agent',
      );
      return 'interrupted';
    }
    if (message.state !== 'queued') return `already ${message.state}`;

    const record = await store.get(thopterId);
    const why = record ? notReady(record) : 'the thopter is gone';
    if (why || !record?.machine) {
      await undeliverable(deps, thopterId, message, why ?? 'the thopter has no machine');
      return 'not delivered';
    }
    const machineId = record.machine.id;
    try {
      const t = await deps.transports.get(machineId);
      const now = await deps.provider.snapshot(machineId, t);
      // Pasted into a shell, the text would run as commands: only a running agent reads it.
      if (!now.sessionAlive || !now.agentRunning) {
        const gone = now.sessionAlive
          ? 'the agent is not running in its terminal (it exited)'
          : 'its terminal session is gone';
        await undeliverable(deps, thopterId, message, gone);
        return 'not delivered';
      }
      const buffer = `tell-${createHash('sha256').update(key).digest('hex').slice(0, 16)}`;
      const loaded = await t.exec(['tmux', 'load-buffer', '-b', buffer, '-'], {
        input: message.text,
        timeoutMs: TMUX_TIMEOUT_MS,
      });
      if (loaded.exitCode !== 0) {
        throw new ThopterError('machine', `tmux could not load the message: ${loaded.stderr.trim()}`, true);
      }
      const claimed = await store.moveTold(thopterId, message, { state: 'delivering' });
      if (!claimed) return 'another hub is delivering it';
      // The turns ended so far, as the machine has them: the local snapshot read them just now; on
      // Fly the record has them only as the observer last posted (every few seconds), so they are
      // read there, lest a turn that ended before the paste be taken for the one answering it.
      const before = now.turns ?? (await readTurns(t));
      const turns = Math.max(before?.count ?? 0, record.turns?.count ?? 0);
      // An agent that waits takes the message at once: counted, so that paste() can tell.
      const prompts = waitsByMarks(before) ? await promptsTaken(t) : undefined;
      return await paste(
        deps,
        { thopterId, machineId, message: claimed, buffer, t, log, signal },
        { turns, prompts },
      );
    } catch (err) {
      const retryable = !(err instanceof ThopterError) || err.retryable;
      if (retryable && job.attemptsMade + 1 < (job.opts.attempts ?? 1)) throw err;
      // Nothing was pasted: the last attempt says why on the record.
      await undeliverable(deps, thopterId, message, `the hub could not reach its session: ${messageOf(err)}`);
      throw new UnrecoverableError(messageOf(err));
    }
  };
}

type MachineTransport = Awaited<ReturnType<ProcessorDeps['transports']['get']>>;

const turnsFile = (t: MachineTransport) => path.posix.join(t.paths.home, TURNS_FILE);

/** The machine's turns file, read now; undefined when there is none yet (no hook has run). */
async function readTurns(t: MachineTransport): Promise<Turns | undefined> {
  return t
    .readFile(turnsFile(t))
    .then((b) => parseTurns(b.toString('utf8')))
    .catch(() => undefined);
}

/** How many prompts the agent has taken (its prompt hook's marks); undefined if unreadable. */
async function promptsTaken(t: MachineTransport): Promise<number | undefined> {
  const r = await t
    .exec(['grep', '-c', `\t${PROMPT_MARK}$`, turnsFile(t)], { timeoutMs: TMUX_TIMEOUT_MS })
    .catch(() => undefined);
  // grep exits 1 when it counts none, 2 when it cannot read the file.
  const n = r && r.exitCode <= 1 ? Number(r.stdout.trim()) : NaN;
  return Number.isInteger(n) ? n : undefined;
}

interface Pasting {
  thopterId: string;
  machineId: string;
  message: ToldMessage;
  buffer: string;
  t: MachineTransport;
  log: ProcessorDeps['log'];
  /** Aborts when the hub stops: the check after the paste is let go. */
  signal: AbortSignal | undefined;
}

/**
 * The paste itself, after which nothing is pasted again. `turns`: the turns ended before it (the
 * report of the next one answers the message); `prompts`: the prompts the agent had taken, when
 * it waited for input (then whether it takes this one is checked).
 */
async function paste(
  deps: ProcessorDeps,
  pasting: Pasting,
  { turns, prompts }: { turns: number; prompts: number | undefined },
): Promise<string> {
  const { thopterId, message, buffer, t, log, signal } = pasting;
  let failure: string | undefined;
  try {
    // -p: bracketed paste, so the agent's prompt takes the lines as one input, not one per line;
    // -d: the buffer goes with it. One tmux call: `;` as an argument of its own separates commands.
    const r = await t.exec(
      [
        'tmux',
        'paste-buffer',
        '-p',
        '-d',
        '-b',
        buffer,
        '-t',
        SESSION,
        ';',
        'send-keys',
        '-t',
        SESSION,
        'Enter',
      ],
      { timeoutMs: TMUX_TIMEOUT_MS },
    );
    if (r.exitCode !== 0) failure = `tmux refused the paste: ${r.stderr.trim()}`;
  } catch (err) {
    failure = `the paste may or may not have reached the agent: ${messageOf(err)}`;
  }
  if (failure) {
    await undeliverable(deps, thopterId, message, failure);
    log.warn({ reason: failure }, 'message not delivered');
    return 'not delivered';
  }
  const delivered = new Date().toISOString();
  await deps.store.moveTold(thopterId, message, {
    state: 'delivered',
    deliveredAt: delivered,
    turnsAtDelivery: turns,
  });
  await deps.store.addEvent(thopterId, 'tell-delivered', `${whoSaid(message)}'s message reached the agent`);
  log.info('message delivered');
  if (prompts === undefined) return 'delivered';
  const taken = await takenOrEnterAgain(deps, pasting, prompts);
  if (taken !== 'taken' && !signal?.aborted) {
    await deps.store.addEvent(thopterId, 'tell-enter', `${whoSaid(message)}'s message: ${TAKEN_SAYS[taken]}`);
  }
  return 'delivered';
}

/** How long a waiting agent has to take a pasted message (its prompt hook marks it). */
const TAKE_WITHIN_MS = 4_000;
const TAKE_POLL_MS = 250;

/** What the thopter's events say of a check that needed more than the first Enter. */
const TAKEN_SAYS = {
  'taken after a second Enter': 'the agent took it after a second Enter',
  'not in its input': `its prompt hook did not mark it within ${TAKE_WITHIN_MS / 1000} s, and its input box does not show it: nothing more was pressed`,
  'not taken':
    'the agent has not taken it, even after a second Enter: it may be in its input, waiting for Enter',
  'Enter not sent': 'the agent did not take it, and tmux could not press Enter again',
  unknown: `whether the agent took it could not be read within ${TAKE_WITHIN_MS / 1000} s (its turns file): nothing more was pressed`,
} as const;

/**
 * An agent that waited takes a pasted message at once, and its prompt hook marks it. A terminal UI
 * can miss an Enter that follows a paste closely (a busy machine hands it both in one read), leaving
 * the text in its input: then, and only if its input box shows the message (not a dialog, not an
 * empty prompt), Enter is pressed once more. Checked with Claude Code 2.1.328: a paste left in its
 * input is submitted whole by a later Enter.
 */
async function takenOrEnterAgain(
  deps: ProcessorDeps,
  { machineId, message, t, log, signal }: Pasting,
  before: number,
): Promise<'taken' | keyof typeof TAKEN_SAYS> {
  /** True once a prompt was taken, false if none in TAKE_WITHIN_MS, undefined if never read. */
  const taken = async () => {
    const deadline = Date.now() + TAKE_WITHIN_MS;
    let read = false;
    while (!signal?.aborted) {
      const now = await promptsTaken(t);
      if (now !== undefined && now > before) return true;
      read ||= now !== undefined;
      if (Date.now() >= deadline) break;
      await sleep(TAKE_POLL_MS, signal).catch(() => undefined);
    }
    return read ? false : undefined;
  };
  const first = await taken();
  if (first) return 'taken';
  if (first === undefined || signal?.aborted) return 'unknown';
  const screen = (await deps.provider.snapshot(machineId, t).catch(() => undefined))?.screen;
  if (!showsMessage(inputBox(screen ?? ''), message.text)) return 'not in its input';
  log.warn(`the agent did not take the message within ${TAKE_WITHIN_MS / 1000} s: pressing Enter again`);
  const r = await t
    .exec(['tmux', 'send-keys', '-t', SESSION, 'Enter'], { timeoutMs: TMUX_TIMEOUT_MS })
    .catch(() => undefined);
  if (r?.exitCode !== 0) return 'Enter not sent';
  return (await taken()) ? 'taken after a second Enter' : 'not taken';
}

/**
 * Whether Claude Code's input box holds the message: its first line as typed, or the placeholder
 * it shows for a long paste ("[Pasted text #1 +39 lines]").
 */
function showsMessage(box: string | undefined, text: string): boolean {
  if (!box) return false;
  const first = text
    .split('\n')
    .find((line) => line.trim())!
    .trim()
    .slice(0, 30);
  return box.includes(first) || /^\[Pasted text #\d+/.test(box);
}

/** Why a thopter cannot be told anything now, or undefined when it can. */
function notReady(record: ThopterRecord): string | undefined {
  if (record.state === 'running')
    return record.destroyRequested ? 'the thopter is being torn down' : undefined;
  if (record.state === 'queued' || record.state === 'provisioning')
    return `the thopter is ${record.state}: its agent is not started yet`;
  return `the thopter is ${record.state}`;
}

async function undeliverable(
  deps: Pick<ProcessorDeps, 'store' | 'queues'>,
  thopterId: string,
  message: ToldMessage,
  reason: string,
): Promise<void> {
  const moved = await deps.store.moveTold(thopterId, message, { state: 'undelivered', reason });
  if (!moved) return;
  await deps.store.addEvent(
    thopterId,
    'tell-undelivered',
    `${whoSaid(message)}'s message did not reach the agent: ${reason}`,
  );
  // Its author saw the hub's reaction: a person who wrote on the issue is told it did not arrive.
  const record = await deps.store.get(thopterId);
  const issueNumber = record?.request.issue.number;
  if (!message.from || record?.request.source !== 'github' || issueNumber === undefined) return;
  await deps.queues.enqueue('reply', {
    repository: record.request.repository,
    issueNumber,
    key: `${message.key}:undelivered`,
    body: `@${message.from}: your ${message.url ? `[message](${message.url})` : 'message'} did not reach thopter \`${thopterId}\`: ${reason}.`,
    label: labelOf(record.request),
  });
}
