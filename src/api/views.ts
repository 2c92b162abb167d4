import { PHASES } from '../processors/phases/index.js';
import type { ThopterEvent, ThopterRecord } from '../thopters/record.js';

/** A thopter as the API shows it: phases in order with timings, and nothing secret. */
export function thopterView(
  r: ThopterRecord,
  extra: { queuePosition?: number | null; events?: ThopterEvent[] } = {},
) {
  const { request } = r;
  return {
    id: r.id,
    state: r.state,
    repository: request.repository,
    issue: {
      number: request.issue.number ?? null,
      title: request.issue.title,
      url: request.issue.url ?? null,
      author: request.issue.author ?? null,
    },
    requestedBy: request.requestedBy,
    source: request.source,
    priority: request.priority,
    gc: request.gc,
    prompt: request.prompt,
    continues: request.continues ?? null,
    queuePosition: extra.queuePosition ?? null,
    machine: r.machine ?? null,
    workBranch: r.machine?.workBranch ?? null,
    currentPhase:
      PHASES.find((p) => ['running', 'retrying'].includes(r.phases[p.name]?.outcome ?? ''))?.name ?? null,
    phases: PHASES.map((p) => {
      const ph = r.phases[p.name];
      return {
        name: p.name,
        optional: p.optional,
        outcome: ph?.outcome ?? 'pending',
        attempts: ph?.attempts ?? 0,
        startedAt: ph?.startedAt ?? null,
        endedAt: ph?.endedAt ?? null,
        durationMs: ph?.endedAt ? Date.parse(ph.endedAt) - Date.parse(ph.startedAt) : null,
        summary: ph?.summary ?? null,
        error: ph?.error ?? null,
      };
    }),
    session: r.session ?? null,
    turns: r.turns ?? null,
    /** While its agent is stalled (mid-turn, nothing moving): since when; and how many stalls so far. */
    stalledSince: r.state === 'running' ? (r.stall?.stalledSince ?? null) : null,
    stalls: r.stall?.count ?? 0,
    usage: r.usage ?? null,
    destroyRequested: r.destroyRequested ?? null,
    kept: r.kept ?? null,
    endReason: r.endReason ?? null,
    saved: r.saved ?? null,
    lastMessage: r.finish?.lastMessage ?? null,
    lastReport: r.lastReport ?? null,
    pullRequest: r.pullRequest ?? null,
    compare: r.compare ?? null,
    /** Messages told to the agent (`/thopter tell`), oldest first, with whether they arrived. */
    told: r.told ?? [],
    createdAt: r.createdAt,
    startedAt: r.startedAt ?? null,
    runningAt: r.runningAt ?? null,
    endedAt: r.endedAt ?? null,
    updatedAt: r.updatedAt,
    ...(extra.events ? { events: extra.events } : {}),
  };
}
