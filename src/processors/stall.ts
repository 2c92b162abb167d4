import { messageOf } from '../errors.js';
import type { Logger } from '../log.js';
import { labelOf } from '../scanner/intake.js';
import { lastProgress, midTurn, watchScreen, type ScreenWatch } from '../status/stall.js';
import type { ThopterRecord } from '../thopters/record.js';
import { transcriptFiles } from '../transcripts/machine.js';
import type { ProcessorDeps } from './deps.js';

/**
 * The tail of the transcript read to tell mid-turn from at rest. The last entries that tell are
 * enough, but Claude Code writes large ones of other kinds between them (a 60 kB attachment after
 * a tool result, a 40 kB request shape before each request).
 */
const TAIL_BYTES = 512 * 1024;

/**
 * Watches one running thopter for a stall (status/stall.ts), from its lifecycle job's supervision:
 * at each check it looks at the session the check just recorded, and only once the settled screen
 * has been still for THOPTER_STALL_AFTER does it look at the transcript on the machine (a stat,
 * then its tail), so a busy agent costs nothing more than a hash. A stall is recorded on the
 * record, as an event `stalled` (`unstalled` once anything moves again), and reported on the
 * issue once (`stall-N`).
 */
export class StallWatcher {
  private screen?: ScreenWatch;
  /**
   * The settled screen last judged at rest (the agent's turn had ended): nothing is read from the
   * machine again until that screen changes, so an agent waiting at its prompt for hours costs no
   * more than a busy one. A new turn shows on the screen (what was typed, the spinner).
   */
  private atRestScreen?: string;

  constructor(
    private readonly deps: ProcessorDeps,
    private readonly log: Logger,
  ) {}

  async look(record: ThopterRecord): Promise<void> {
    const stallAfterMs = this.deps.config.stallAfterMs;
    const session = record.session;
    if (!stallAfterMs || record.state !== 'running' || !record.machine || !session) return;
    // A session the hub cannot see says nothing; one without its agent is not stalled but gone.
    if (session.state === 'unknown') return;
    if (session.state === 'stopped' || !session.agentRunning) {
      return this.unstall(record, 'the agent is no longer running');
    }
    const now = new Date();
    // A stall recorded before this job (a restart) stays until something moves.
    const stalledSince = record.stall?.stalledSince;
    this.screen = watchScreen(
      this.screen,
      session.screen,
      this.screen || !stalledSince ? now : new Date(stalledSince),
    );
    if (now.getTime() - Date.parse(this.screen.screenSince) < stallAfterMs) {
      return this.unstall(record, 'its screen changed');
    }
    if (this.atRestScreen === this.screen.screenHash) return;
    try {
      const t = await this.deps.transports.get(record.machine.id);
      const newest = (await transcriptFiles(t)).at(-1);
      // No transcript: not Claude Code, or not started; a stall cannot be told from a wait.
      if (!newest) {
        this.atRestScreen = this.screen.screenHash;
        return;
      }
      const mtimeMs = Math.round(newest.mtime * 1000);
      const progress = lastProgress(this.screen, mtimeMs);
      if (now.getTime() - progress < stallAfterMs) return this.unstall(record, 'its transcript grew');
      if (record.stall?.stalledSince) return;
      const tail = await t.exec(['tail', '-c', String(TAIL_BYTES), newest.path], { timeoutMs: 15_000 });
      if (tail.exitCode !== 0) throw new Error(`the transcript could not be read: ${tail.stderr.trim()}`);
      if (!midTurn(tail.stdout, record.turns?.lastEndedAt)) {
        this.atRestScreen = this.screen.screenHash;
        return;
      }
      await this.stall(record, new Date(progress));
    } catch (err) {
      this.log.warn({ err: messageOf(err) }, 'could not look for a stall');
    }
  }

  private async stall(record: ThopterRecord, since: Date) {
    const count = (record.stall?.count ?? 0) + 1;
    const stalledSince = since.toISOString();
    await this.deps.store.setStall(record.id, { count, stalledSince });
    const quietMin = Math.round((Date.now() - since.getTime()) / 60_000);
    await this.deps.store.addEvent(
      record.id,
      'stalled',
      `the agent is mid-turn and has made no progress since ${stalledSince} (${quietMin} min; THOPTER_STALL_AFTER)`,
    );
    await this.deps.announce(record.id);
    this.log.warn({ stalledSince }, 'the agent is stalled');
    if (record.request.source !== 'github') return;
    await this.deps.queues.enqueue('report', {
      thopterId: record.id,
      label: labelOf(record.request),
      key: `stall-${count}`,
    });
  }

  private async unstall(record: ThopterRecord, why: string) {
    if (!record.stall?.stalledSince) return;
    await this.deps.store.setStall(record.id, { count: record.stall.count });
    await this.deps.store.addEvent(record.id, 'unstalled', `no longer stalled: ${why}`);
    await this.deps.announce(record.id);
    this.log.info({ why }, 'the agent is no longer stalled');
  }
}
