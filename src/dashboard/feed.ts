import type { ServerResponse } from 'node:http';
import type { Context } from 'koa';
import type { GitHubClients } from '../github/clients.js';
import type { Logger } from '../log.js';
import type { Provider } from '../providers/types.js';
import type { HubQueues } from '../queues/index.js';
import type { Intake } from '../scanner/pause.js';
import type { RecordChanges } from '../thopters/changes.js';
import { isFinal, type ThopterRecord } from '../thopters/record.js';
import type { ThopterStore } from '../thopters/store.js';
import { rowView, type Row } from './rows.js';

/** Changed records are gathered this long and sent as one event: 300 status posts a second stay cheap. */
const BATCH_MS = 500;
/** Queue places, golden claudes and intake are sent again this often. */
const SUMMARY_MS = 5_000;
/** Golden claude states are asked of the provider at most this often (on Fly each is an API call). */
const GOLDEN_MAX_AGE_MS = 15_000;
const HEARTBEAT_MS = 15_000;
/** What the main page shows: every live thopter and this many of the latest ended ones. */
const RECENT_ENDED = 20;

export interface FeedDeps {
  store: ThopterStore;
  changes: RecordChanges;
  queues: HubQueues;
  provider: Provider;
  intake: Intake;
  github: GitHubClients;
  log: Logger;
}

export interface GoldenRow {
  name: string;
  state: string;
  location: string;
  /** Why copying from it would be unsafe now (Claude is running on it). */
  busy?: string;
}

export interface Summary {
  queue: Record<string, number>;
  goldenClaudes: GoldenRow[];
  intake: { paused: boolean; since?: string; by?: string };
  repositories: string[];
  github: Record<string, { ok: boolean; error?: string } | null>;
  at: string;
}

/**
 * The dashboard's live data, one per hub process: record changes (from any hub, through the
 * store's change channel) are gathered for BATCH_MS, read once, and sent to every open dashboard as
 * one server-sent event. The cost of a change is one Redis read whatever the number of dashboards.
 */
export class DashboardFeed {
  private readonly clients = new Set<ServerResponse>();
  private readonly pending = new Set<string>();
  private flushTimer?: NodeJS.Timeout;
  private readonly summaryTimer: NodeJS.Timeout;
  private readonly heartbeat: NodeJS.Timeout;
  private readonly offChanges: () => void;
  private golden?: { at: number; rows: Promise<GoldenRow[]> };
  /** The row last sent for each thopter, as JSON. */
  private readonly sent = new Map<string, string>();

  constructor(private readonly deps: FeedDeps) {
    this.offChanges = deps.changes.onAny((id) => {
      if (this.clients.size === 0) return;
      this.pending.add(id);
      this.flushTimer ??= setTimeout(() => void this.flush(), BATCH_MS);
    });
    this.summaryTimer = setInterval(() => {
      if (this.clients.size > 0) void this.sendSummary();
    }, SUMMARY_MS);
    this.heartbeat = setInterval(() => this.broadcast(': keep-alive\n\n'), HEARTBEAT_MS);
    this.summaryTimer.unref();
    this.heartbeat.unref();
  }

  /** Every live thopter and the latest ended ones, with places in line: the page's first paint. */
  async snapshot(): Promise<{ thopters: Row[]; summary: Summary }> {
    const [records, summary] = await Promise.all([this.deps.store.list({ limit: 5000 }), this.summary()]);
    const live = records.filter((r) => !isFinal(r.state));
    if (this.clients.size === 0) this.sent.clear();
    const ended = records.filter((r) => isFinal(r.state)).slice(0, RECENT_ENDED);
    return { thopters: [...live, ...ended].map((r) => rowView(r, summary.queue[r.id] ?? null)), summary };
  }

  /** Turns the request into an event stream: a snapshot first, then changes as they happen. */
  async attach(ctx: Context): Promise<void> {
    const first = await this.snapshot();
    ctx.req.socket.setTimeout(0);
    ctx.req.socket.setNoDelay(true);
    ctx.respond = false;
    const res = ctx.res;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-store',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    res.write(`retry: 2000\nevent: snapshot\ndata: ${JSON.stringify(first)}\n\n`);
    this.clients.add(res);
    const drop = () => this.clients.delete(res);
    res.once('close', drop);
    res.once('error', drop);
  }

  private async flush(): Promise<void> {
    this.flushTimer = undefined;
    const ids = [...this.pending];
    this.pending.clear();
    try {
      const records = await this.deps.store.getMany(ids);
      const gone = ids.filter((id) => !records.some((r) => r.id === id));
      const queue = records.some((r) => r.state === 'queued')
        ? await this.deps.queues.queueOrder()
        : undefined;
      // A status post that changed nothing a row shows (an idle agent's) is not sent.
      const rows = records
        .map((r: ThopterRecord) => rowView(r, queue?.get(r.id) ?? null))
        .filter((row) => {
          const json = JSON.stringify(row);
          if (this.sent.get(row.id) === json) return false;
          this.sent.set(row.id, json);
          return true;
        });
      for (const id of gone) this.sent.delete(id);
      if (rows.length === 0 && gone.length === 0) return;
      this.broadcast(`event: thopters\ndata: ${JSON.stringify({ thopters: rows, removed: gone })}\n\n`);
    } catch (err) {
      this.deps.log.warn({ err: (err as Error).message }, 'dashboard update failed');
    }
  }

  private async sendSummary(): Promise<void> {
    try {
      this.broadcast(`event: summary\ndata: ${JSON.stringify(await this.summary())}\n\n`);
    } catch (err) {
      this.deps.log.warn({ err: (err as Error).message }, 'dashboard summary failed');
    }
  }

  async summary(): Promise<Summary> {
    const [queue, goldenClaudes, intake, github] = await Promise.all([
      this.deps.queues.queueOrder(),
      this.goldenClaudes(),
      this.deps.intake.state(),
      this.deps.github.health(),
    ]);
    return {
      queue: Object.fromEntries(queue),
      goldenClaudes,
      intake,
      repositories: this.deps.github.repositories,
      github,
      at: new Date().toISOString(),
    };
  }

  private goldenClaudes(): Promise<GoldenRow[]> {
    if (this.golden && Date.now() - this.golden.at < GOLDEN_MAX_AGE_MS) return this.golden.rows;
    const rows = (async () => {
      const infos = await this.deps.provider.listGoldenClaudes();
      return Promise.all(
        infos.map(async (info): Promise<GoldenRow> => {
          const gc = await this.deps.provider.goldenClaude(info.name).catch(() => null);
          const busy = gc ? await gc.busy().catch(() => undefined) : undefined;
          await gc?.transport.close().catch(() => {});
          return { ...info, ...(busy ? { busy } : {}) };
        }),
      );
    })().catch((err) => {
      this.deps.log.warn({ err: (err as Error).message }, 'golden claudes could not be listed');
      return [];
    });
    this.golden = { at: Date.now(), rows };
    return rows;
  }

  private broadcast(chunk: string): void {
    for (const res of this.clients) res.write(chunk);
  }

  close(): void {
    this.offChanges();
    clearTimeout(this.flushTimer);
    clearInterval(this.summaryTimer);
    clearInterval(this.heartbeat);
    for (const res of this.clients) res.end();
    this.clients.clear();
  }
}
