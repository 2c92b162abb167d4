import { isHttpUrl } from '../config.js';
import { PHASES } from '../processors/phases/index.js';
import { isFinal, type ThopterRecord } from '../thopters/record.js';

/**
 * What the dashboard colours a thopter by: its state, and for a running one its session's
 * (`stalled`: its agent is mid-turn and nothing moves, status/stall.ts; `stopped`: the terminal session is gone while the machine lives; `unknown`: its observer is silent; `kept`: failed, its machine kept for a look).
 */
export type Condition =
  | 'queued'
  | 'provisioning'
  | 'active'
  | 'idle'
  | 'stalled'
  | 'stopped'
  | 'unknown'
  | 'kept'
  | 'stopping'
  | 'failed'
  | 'destroyed';

/** A thopter as one line of the main page: small (no screen, no issue body), sent on every change. */
export interface Row {
  id: string;
  condition: Condition;
  state: ThopterRecord['state'];
  repository: string;
  issue: { number: number | null; title: string; url: string | null };
  requestedBy: string;
  source: string;
  priority: number;
  gc: string;
  workBranch: string | null;
  branchUrl: string | null;
  currentPhase: string | null;
  queuePosition: number | null;
  agentRunning: boolean | null;
  lastActivity: string | null;
  idleSince: string | null;
  /** While its agent is stalled: since when nothing moved. */
  stalledSince: string | null;
  createdAt: string;
  runningAt: string | null;
  endedAt: string | null;
  endReason: string | null;
  /** For `kept`: what failed, and until when its machine stays. */
  kept: { reason: string; until: string } | null;
  warnings: number;
}

export function conditionOf(r: ThopterRecord): Condition {
  switch (r.state) {
    case 'running':
      if (r.stall?.stalledSince) return 'stalled';
      return r.session && r.session.state !== 'active' ? r.session.state : 'active';
    default:
      return r.state;
  }
}

/** The work branch on GitHub, from the issue's own address (github.com or GitHub Enterprise). */
export function branchUrl(issueUrl: string | undefined, branch: string | undefined): string | null {
  if (!issueUrl || !branch) return null;
  const m = /^(https?:\/\/[^/]+\/[^/]+\/[^/]+)\/issues\/\d+$/.exec(issueUrl);
  return m ? `${m[1]}/tree/${branch.split('/').map(encodeURIComponent).join('/')}` : null;
}

/** A URL the dashboard may render as a link: http(s) only, else null. */
export function linkable(url: string | undefined): string | null {
  return url && isHttpUrl(url) ? url : null;
}

export function rowView(r: ThopterRecord, queuePosition: number | null = null): Row {
  const phase = PHASES.find((p) => ['running', 'retrying'].includes(r.phases[p.name]?.outcome ?? ''));
  return {
    id: r.id,
    condition: conditionOf(r),
    state: r.state,
    repository: r.request.repository,
    issue: {
      number: r.request.issue.number ?? null,
      title: r.request.issue.title,
      // Records stored before launch URLs were checked may hold any scheme: never send it as a link.
      url: linkable(r.request.issue.url),
    },
    requestedBy: r.request.requestedBy,
    source: r.request.source,
    priority: r.request.priority,
    gc: r.request.gc,
    workBranch: r.machine?.workBranch ?? null,
    branchUrl: branchUrl(r.request.issue.url, r.machine?.workBranch),
    currentPhase: phase?.name ?? null,
    queuePosition: r.state === 'queued' ? queuePosition : null,
    // An ended thopter's last session is history: no agent runs on a machine that is gone.
    agentRunning: r.session && !isFinal(r.state) ? r.session.agentRunning : null,
    lastActivity: r.session?.lastActivity ?? null,
    idleSince: r.session?.idleSince ?? null,
    stalledSince: r.state === 'running' ? (r.stall?.stalledSince ?? null) : null,
    createdAt: r.createdAt,
    runningAt: r.runningAt ?? null,
    endedAt: r.endedAt ?? null,
    endReason: r.endReason ?? null,
    kept: r.state === 'kept' ? (r.kept ?? null) : null,
    warnings: Object.values(r.phases).filter((p) => p?.outcome === 'warning').length,
  };
}
