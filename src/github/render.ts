import { createHash } from 'node:crypto';
import { PHASES } from '../processors/phases/index.js';
import { isFinal, type ThopterRecord } from '../thopters/record.js';
import { describeUsage } from '../usage/format.js';

/** The seed's marker: it lets a retried post find the comment it already made. */
export const ackMarker = (instance: string) => `<!-- thopter-ack:${instance} -->`;

/** A one-off reply's marker, from its key, so the reply is posted once and found again. */
export const replyMarker = (key: string) =>
  `<!-- thopter-reply:${createHash('sha256').update(key).digest('hex').slice(0, 24)} -->`;

const PHASE_ICON: Record<string, string> = {
  running: '⏳',
  retrying: '🔁',
  succeeded: '✅',
  skipped: '➖',
  warning: '⚠️',
  failed: '❌',
};

/**
 * The thopter's status comment: posted as the acknowledgement, then edited as the thopter moves
 * (queued with its place in line, each phase, running, destroyed or failed with the reason).
 */
export function renderStatus(
  record: ThopterRecord,
  opts: { instance: string; publicUrl: string; queuePosition: number | null },
): string {
  const { request } = record;
  const who = request.issue.mentionAuthor ? `@${request.issue.mentionAuthor}` : request.requestedBy;
  const page = `${opts.publicUrl}/thopters/${record.id}`;
  const lines = [
    ackMarker(opts.instance),
    `**Thopter** \`${record.id}\` for ${who}: ${headline(record, opts.queuePosition)}`,
    '',
  ];
  if (request.continues) {
    lines.push(
      `Continues \`${request.continues.thopterId}\` on its branch \`${request.continues.workBranch}\`.`,
    );
  }
  if (record.machine) lines.push(`Work branch: \`${record.machine.workBranch}\``);
  const phases = PHASES.filter((p) => record.phases[p.name]).map((p) => {
    const ph = record.phases[p.name]!;
    return `${PHASE_ICON[ph.outcome] ?? ''} ${p.name}${ph.outcome === 'warning' && ph.error ? ` (${ph.error})` : ''}`;
  });
  if (phases.length) lines.push(`Phases: ${phases.join(' · ')}`);
  // What it cost, once it ended: while it runs the figure would change the comment at every turn
  // (the reports and the dashboard carry it then).
  if (isFinal(record.state) && record.usage?.messages) lines.push(`${describeUsage(record.usage)}.`);
  // Links into the dashboard (signed in with the hub's token): the terminal and the session log
  // only while the agent runs.
  const links = [`[dashboard](${page})`];
  if (record.lastReport) links.push(`[latest report](${record.lastReport.url})`);
  if (record.state === 'running' || record.state === 'kept')
    links.push(`[terminal](${page}/terminal)`, `[session log](${page}/log)`);
  lines.push(`Request \`${record.id}\` · ${links.join(' · ')}`);
  return lines.join('\n') + '\n';
}

/** Whether a status comment's headline shows its thopter ended (see `headline`). */
export function statusShowsEnd(body: string): boolean {
  return /^\*\*Thopter\*\* `[^`]*` for .*: \*\*(destroyed|failed)\*\*/m.test(body);
}

function headline(record: ThopterRecord, position: number | null): string {
  switch (record.state) {
    case 'queued':
      return position ? `**queued**, number ${position} in line.` : '**queued**.';
    case 'provisioning': {
      const current = PHASES.find((p) =>
        ['running', 'retrying'].includes(record.phases[p.name]?.outcome ?? ''),
      );
      return `**provisioning**${current ? `: ${current.name}` : ''}.`;
    }
    case 'running':
      return record.stall?.stalledSince
        ? `**running**, but **stalled**: mid-turn with no progress since ${record.stall.stalledSince.slice(0, 16).replace('T', ' ')} UTC (see its terminal).`
        : '**running**: the agent is at work.';
    case 'kept':
      return `**failed**: ${record.kept?.reason ?? 'unknown error'}. Its machine is kept for a look until ${record.kept?.until ?? 'it is killed'} (THOPTER_KEEP_FAILED); kill it when done.`;
    case 'stopping':
      return `**stopping** (${record.destroyRequested?.reason ?? 'destroy requested'}).`;
    case 'destroyed':
      return `**destroyed** (${record.endReason ?? 'destroyed'}).`;
    case 'failed':
      return `**failed**: ${record.endReason ?? 'unknown error'}. The machine was destroyed.`;
  }
}

/** Found in the body of a pull request the hub opened, naming its thopter. */
export const pullRequestMarker = (thopterId: string) => `<!-- thopter-pr:${thopterId} -->`;

/**
 * The body of a work branch's pull request: which issue it closes (or refers to, when the
 * repository's `closeIssue` is false), what the agent said it did, and its thopter's page.
 */
export function renderPullRequestBody(
  record: ThopterRecord,
  opts: {
    publicUrl: string;
    closeIssue: boolean;
    /** The agent's last message, as the transcript has it; omitted when there is none. */
    agentMessage?: string;
  },
): string {
  const number = record.request.issue.number;
  const lines = [pullRequestMarker(record.id)];
  if (number !== undefined) lines.push(`${opts.closeIssue ? 'Closes' : 'Refs'} #${number}`, '');
  // GitHub refuses a body over 65,536 characters: a long last message is cut, the rest kept.
  const said = opts.agentMessage?.trim().slice(0, 60_000);
  if (said) lines.push('**What the agent says it did**', '', said, '');
  lines.push(
    `Opened by thopter [\`${record.id}\`](${opts.publicUrl}/thopters/${record.id}) from its work branch.`,
  );
  return lines.join('\n') + '\n';
}
