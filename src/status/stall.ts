import { createHash } from 'node:crypto';
import { BOX_BORDER } from './screen.js';

/**
 * A stall: the agent is in the middle of a turn (it has not handed back to a person) and nothing
 * moves: its transcript has not grown and its screen has not changed for THOPTER_STALL_AFTER. A
 * hung tool call or a model request that never answers looks like that. An agent at its prompt
 * after a turn is waiting for a person, not stalled, however long it waits.
 *
 * Claude Code animates a spinner and counts seconds while it waits ("✶ Gusting… (23s)"), so a raw
 * screen changes every second even when nothing happens: the screen is compared settled, with its
 * spinner line and its figures masked.
 */

/**
 * What the record keeps of stalls: how many were reported (the next one's report is
 * `stall-${count + 1}`), and while stalled, since when the agent has made no progress.
 */
export interface StallRecord {
  count: number;
  stalledSince?: string;
}

/**
 * The screen as the lifecycle job last saw it, kept in its memory only: writing it to the record
 * at every change would wake every dashboard. After a hub restart the watch starts again, which
 * delays a stall's report by THOPTER_STALL_AFTER at most.
 */
export interface ScreenWatch {
  /** sha256 of the settled screen last seen. */
  screenHash: string;
  /** When the settled screen last changed (or was first seen). */
  screenSince: string;
}

/** A spinner line: a glyph, a word ending in an ellipsis ("✶ Gusting… (23s · ↓ 1.2k tokens)"). */
const SPINNER_LINE = /^\s*\S\s+\S+…/;

/**
 * The part of the screen that shows the agent's progress, with what moves by itself left out: from
 * the spinner line down (its timer, and the passing notices, input box and footer below it), or
 * without a spinner from the input box down; and every figure above masked (a tool's timer).
 */
export function settledScreen(screen: string): string {
  const lines = screen.split('\n');
  let end = lines.findIndex((line) => SPINNER_LINE.test(line));
  if (end < 0) {
    const borders = lines.flatMap((line, i) => (BOX_BORDER.test(line) ? [i] : []));
    end = borders.length >= 2 ? borders[borders.length - 2]! : lines.length;
  }
  return lines
    .slice(0, end)
    .map((line) => line.replace(/\d+/g, '#'))
    .join('\n');
}

/** The watch after one more look at the screen: `screenSince` moves only when the settled screen changed. */
export function watchScreen(previous: ScreenWatch | undefined, screen: string, now: Date): ScreenWatch {
  const screenHash = createHash('sha256').update(settledScreen(screen)).digest('hex');
  if (previous?.screenHash === screenHash) return previous;
  return { screenHash, screenSince: now.toISOString() };
}

/**
 * Whether the agent is mid-turn, from the tail of its newest transcript (Claude Code's JSONL, one
 * line per content block, among many lines of other kinds): the last entry that tells is the
 * user's (a prompt or a tool's result the model has not answered), a request to the model sent
 * and not answered (`api-request`), or the model's call of a tool (the tool still runs). The
 * model's text, the turn's end (`system` `turn_duration`), a turn the Stop hook ended after the
 * entry, or an interrupted request: at rest.
 */
export function midTurn(transcriptTail: string, lastTurnEndedAt?: string): boolean {
  const lines = transcriptTail.split('\n');
  for (let i = lines.length - 1; i >= 0; i--) {
    let entry: { type?: unknown; subtype?: unknown; timestamp?: unknown; message?: { content?: unknown } };
    try {
      entry = JSON.parse(lines[i]!) as typeof entry;
    } catch {
      continue; // a torn first or last line
    }
    if (entry.type === 'system' && entry.subtype === 'turn_duration') return false;
    if (entry.type !== 'user' && entry.type !== 'assistant' && entry.type !== 'api-request') continue;
    const at = typeof entry.timestamp === 'string' ? Date.parse(entry.timestamp) : NaN;
    if (lastTurnEndedAt && at <= Date.parse(lastTurnEndedAt)) return false;
    if (entry.type === 'api-request') return true;
    const content = entry.message?.content;
    const blocks: { type?: unknown; text?: unknown }[] =
      typeof content === 'string' ? [{ type: 'text', text: content }] : Array.isArray(content) ? content : [];
    if (entry.type === 'assistant') return blocks.some((b) => b.type === 'tool_use');
    return !blocks.some((b) => typeof b.text === 'string' && b.text.startsWith('[Request interrupted'));
  }
  return false;
}

/**
 * The last moment anything moved: the settled screen or the transcript (its file's mtime). A stall
 * is when that is at least `stallAfterMs` ago and the agent is mid-turn. The mtime is the machine's
 * clock and the screen's time the hub's: a skew of seconds does not matter against minutes.
 */
export function lastProgress(watch: ScreenWatch, transcriptMtimeMs: number | undefined): number {
  return Math.max(Date.parse(watch.screenSince), transcriptMtimeMs ?? 0);
}

/** The last lines of a screen, its runs of blank lines (a mostly empty pane) made one: what a stall report shows. */
export function screenTail(screen: string, lines = 15): string {
  const kept = screen
    .replace(/\s+$/, '')
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l, i, all) => l !== '' || (i > 0 && all[i - 1] !== ''));
  return kept.slice(-lines).join('\n');
}
