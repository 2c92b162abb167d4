import { screenTail } from '../status/stall.js';
import { describeSave, type ThopterRecord } from '../thopters/record.js';
import { describeUsage } from '../usage/format.js';

/** A report is found again by its marker: a retried post never makes a second one. */
export const reportMarker = (thopterId: string, key: string) => `<!-- thopter-report:${thopterId}:${key} -->`;

/** The agent's last message is quoted up to this many characters; the rest is on the dashboard. */
const MAX_MESSAGE_CHARS = 2000;

/**
 * What a report is about. `turn-N`: the agent ended its turn N and waits; `exit`: the agent
 * process exited; `end`: the thopter ended (destroyed or failed, with the reason); `stall-N`: its
 * Nth stall (status/stall.ts), with since when and what its screen shows.
 */
export type ReportKey = `turn-${number}` | 'exit' | 'end' | `stall-${number}`;

/**
 * A report on the issue: a new comment (an edit notifies nobody) saying what happened, how long the
 * thopter ran, and what the agent said last, with links to the thopter.
 */
export function renderReport(
  record: ThopterRecord,
  opts: { key: ReportKey; publicUrl: string; lastMessage?: string; now?: Date },
): string {
  const page = `${opts.publicUrl}/thopters/${record.id}`;
  const lines = [
    reportMarker(record.id, opts.key),
    `**Thopter** \`${record.id}\` ${headline(record, opts.key)}`,
    '',
  ];
  const answers = answered(record, opts.key);
  if (answers) lines.push(answers, '');
  if (record.machine) lines.push(`Work branch: \`${record.machine.workBranch}\``);
  const work = workLine(record);
  if (work) lines.push(work);
  // What the save before the teardown did with the work the agent had not pushed.
  if (opts.key === 'end' && record.saved && record.machine)
    lines.push(`Work saved: ${describeSave(record.saved, record.machine.workBranch)}.`);
  const ran = ranFor(record, opts.now ?? new Date());
  if (ran) lines.push(`Ran for ${ran}.`);
  if (record.usage?.messages) lines.push(`${describeUsage(record.usage)}.`);
  // A stall is about the screen, not the agent's last words (they are from before it hung).
  if (opts.key.startsWith('stall-')) {
    lines.push('', 'Its screen shows:', '', ...fenced(screenTail(record.session?.screen ?? '')));
  } else if (opts.lastMessage) {
    const text =
      opts.lastMessage.length > MAX_MESSAGE_CHARS
        ? `${opts.lastMessage.slice(0, MAX_MESSAGE_CHARS)}… (the rest is in the session log)`
        : opts.lastMessage;
    lines.push('', 'Its last message:', '', ...quote(text));
  }
  lines.push('', `[dashboard](${page}) · [session log](${page}/log)`);
  return lines.join('\n') + '\n';
}

/**
 * The work as GitHub sees it: the pull request (or, when pull requests are off, a compare link),
 * and the commits and diffstat the work branch has over the default branch.
 */
function workLine(record: ThopterRecord): string | undefined {
  const { pullRequest: pr, compare, machine } = record;
  const parts: string[] = [];
  if (pr) parts.push(`Pull request: [#${pr.number}](${pr.url})${pr.draft ? ' (draft)' : ''}`);
  if (compare && compare.aheadBy > 0) {
    const issueUrl = record.request.issue.url;
    const base = /^(https?:\/\/[^?#]+)\/issues\/\d+$/.exec(issueUrl ?? '')?.[1];
    const what = `${compare.aheadBy} commit${compare.aheadBy === 1 ? '' : 's'} ahead of \`${compare.base}\``;
    const linked =
      !pr && base && machine ? `[${what}](${base}/compare/${compare.base}...${machine.workBranch})` : what;
    parts.push(
      `${linked}: ${compare.filesChanged} file${compare.filesChanged === 1 ? '' : 's'} changed, +${compare.additions} −${compare.deletions}`,
    );
  }
  return parts.length ? parts.join(' · ') : undefined;
}

function headline(record: ThopterRecord, key: ReportKey): string {
  if (key === 'exit') return 'has stopped: **the agent exited**; its terminal is still open.';
  if (key.startsWith('stall-')) {
    const since = record.stall?.stalledSince;
    return `**seems stalled**: it is mid-turn and has made no progress${since ? ` since ${since}` : ''} (its transcript and screen have not changed). A hung tool call or model request looks like this; look at its terminal, tell it something, or kill it.`;
  }
  if (key !== 'end') return '**finished its turn** and waits for an answer.';
  const reason = record.endReason ?? record.state;
  return record.state === 'failed' ? `**failed**: ${reason}.` : `**ended**: ${reason}.`;
}

/** "It answers @alice's [message](…)": the told messages this report's turn answers (processors/tell.ts). */
function answered(record: ThopterRecord, key: ReportKey): string | undefined {
  const told = (record.told ?? []).filter((m) => m.answeredIn === key);
  if (!told.length) return undefined;
  const each = told.map((m) => {
    const who = m.from ? `@${m.from}'s` : "the hub's";
    return m.url ? `${who} [message](${m.url})` : `${who} message`;
  });
  const list = each.length > 1 ? `${each.slice(0, -1).join(', ')} and ${each.at(-1)}` : each[0];
  return `It answers ${list}.`;
}

/** A Markdown quote of the text, whatever it holds: each line quoted, so nothing escapes it. */
function quote(text: string): string[] {
  // A line of backticks or an HTML comment inside a quote stays inside it; a marker-like comment
  // cannot pass for the hub's own, since markers are only trusted in the hub's own comments.
  return text.split('\n').map((l) => `> ${l}`);
}

/** A code block holding the text as is: its fence is longer than any run of backticks inside. */
function fenced(text: string): string[] {
  const longest = Math.max(2, ...(text.match(/`+/g) ?? []).map((run) => run.length));
  const fence = '`'.repeat(longest + 1);
  return [fence + 'text', text, fence];
}

function ranFor(record: ThopterRecord, now: Date): string | undefined {
  const from = record.runningAt ?? record.startedAt;
  if (!from) return undefined;
  const ms = Date.parse(record.endedAt ?? now.toISOString()) - Date.parse(from);
  if (!(ms >= 0)) return undefined;
  const minutes = Math.round(ms / 60_000);
  if (minutes < 1) return `${Math.max(1, Math.round(ms / 1000))} s`;
  if (minutes < 60) return `${minutes} min`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}
