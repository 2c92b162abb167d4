import type { Redis } from 'ioredis';
import type { HubQueues } from './queues/index.js';
import type { ThopterStore } from './thopters/store.js';
import { TOKEN_KINDS } from './usage/tokens.js';
import { readUsageRows, usageKeys } from './usage/totals.js';

/** Phase duration buckets, in seconds: a wait-ready takes seconds, a clone can take minutes. */
const PHASE_BUCKETS = [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900];
const FLUSH_MS = 5_000;
const HISTOGRAM = 'thopter_phase_duration_seconds';

type Labels = Record<string, string | number>;

function series(name: string, labels: Labels = {}): string {
  const parts = Object.entries(labels).map(
    ([k, v]) => `${k}="${String(v).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`,
  );
  return parts.length ? `${name}{${parts.join(',')}}` : name;
}

const HELP: Record<string, [type: string, help: string]> = {
  thopter_thopters: ['gauge', 'Thopters by state (latest 10000 records).'],
  thopter_queue_waiting: ['gauge', 'Thopters waiting for capacity.'],
  thopter_phase_duration_seconds: ['histogram', 'How long provisioning phases took, by phase and outcome.'],
  thopter_phase_failures_total: ['counter', 'Provisioning phases that failed, by phase.'],
  thopter_github_requests_total: ['counter', 'Requests to the GitHub API, by repository and status.'],
  thopter_github_rate_limit_remaining: ['gauge', 'Requests left in the current GitHub rate-limit window.'],
  thopter_status_posts_total: ['counter', 'Observer status posts received, by HTTP status answered.'],
  thopter_tokens_total: ['counter', 'Tokens the agents used, from their transcripts, by model and kind.'],
  thopter_cost_usd_total: [
    'counter',
    'Estimated USD the agents cost, by model (absent for a model with no price: see THOPTER_PRICES).',
  ],
};

/** Prometheus's words for the token kinds. */
const KIND_LABEL = {
  input: 'input',
  output: 'output',
  cacheRead: 'cache_read',
  cacheCreation: 'cache_creation',
};

/**
 * Prometheus metrics for every hub sharing one Redis: each hub adds its counts to one Redis hash
 * (gathered in memory and written every few seconds, so a status post costs no extra round trip),
 * and any hub's /metrics shows the whole swarm.
 */
export class Metrics {
  private pending = new Map<string, number>();
  private gauges = new Map<string, number>();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {
    this.timer = setInterval(() => void this.flush().catch(() => {}), FLUSH_MS);
    this.timer.unref();
  }

  private get countersKey() {
    return `${this.prefix}:metrics:counters`;
  }
  private get gaugesKey() {
    return `${this.prefix}:metrics:gauges`;
  }

  inc(name: string, labels: Labels = {}, by = 1): void {
    const key = series(name, labels);
    this.pending.set(key, (this.pending.get(key) ?? 0) + by);
  }

  gauge(name: string, labels: Labels, value: number): void {
    this.gauges.set(series(name, labels), value);
  }

  phaseEnded(phase: string, outcome: string, seconds: number): void {
    for (const le of PHASE_BUCKETS) {
      if (seconds <= le) this.inc('thopter_phase_duration_seconds_bucket', { phase, outcome, le });
    }
    this.inc('thopter_phase_duration_seconds_bucket', { phase, outcome, le: '+Inf' });
    this.inc('thopter_phase_duration_seconds_sum', { phase, outcome }, seconds);
    this.inc('thopter_phase_duration_seconds_count', { phase, outcome });
    if (outcome === 'failed') this.inc('thopter_phase_failures_total', { phase });
  }

  async flush(): Promise<void> {
    if (this.pending.size === 0 && this.gauges.size === 0) return;
    const counts = this.pending;
    const gauges = this.gauges;
    this.pending = new Map();
    this.gauges = new Map();
    const pipeline = this.redis.pipeline();
    for (const [key, by] of counts) pipeline.hincrbyfloat(this.countersKey, key, by);
    if (gauges.size) pipeline.hset(this.gaugesKey, Object.fromEntries(gauges));
    await pipeline.exec();
  }

  /** The text format Prometheus scrapes. */
  async render(store: ThopterStore, queues: HubQueues): Promise<string> {
    await this.flush();
    const [counters, gauges, records, queue, usage] = await Promise.all([
      this.redis.hgetall(this.countersKey),
      this.redis.hgetall(this.gaugesKey),
      store.list({ limit: 10_000 }),
      queues.queueOrder(),
      // The all-time aggregate the usage writes keep in Redis: it survives hub restarts.
      readUsageRows(this.redis, usageKeys(this.prefix, new Date()).all),
    ]);
    const byState = new Map<string, number>();
    for (const s of ['queued', 'provisioning', 'running', 'kept', 'stopping', 'destroyed', 'failed'])
      byState.set(s, 0);
    for (const r of records) byState.set(r.state, (byState.get(r.state) ?? 0) + 1);
    const lines = new Map<string, string[]>();
    const add = (key: string, value: number | string) => {
      // A histogram's _bucket, _sum and _count series share its family's HELP and TYPE.
      const base = key.replace(/\{.*$/, '');
      const name = base.startsWith(HISTOGRAM) ? HISTOGRAM : base;
      if (!lines.has(name)) lines.set(name, []);
      lines.get(name)!.push(`${key} ${value}`);
    };
    for (const [state, n] of byState) add(series('thopter_thopters', { state }), n);
    add('thopter_queue_waiting', queue.size);
    for (const key of Object.keys(counters).sort()) add(key, Number(counters[key]));
    for (const key of Object.keys(gauges).sort()) add(key, Number(gauges[key]));
    for (const row of usage) {
      const labels = { repository: row.repository, requested_by: row.requestedBy, model: row.model };
      for (const kind of TOKEN_KINDS) {
        add(series('thopter_tokens_total', { ...labels, kind: KIND_LABEL[kind] }), row.tokens[kind]);
      }
      if (row.costUsd !== null) add(series('thopter_cost_usd_total', labels), row.costUsd);
    }
    let out = '';
    for (const [name, rows] of lines) {
      const [type, help] = HELP[name] ?? ['untyped', name];
      out += `# HELP ${name} ${help}\n# TYPE ${name} ${type}\n${rows.join('\n')}\n`;
    }
    return out;
  }

  close(): Promise<void> {
    clearInterval(this.timer);
    return this.flush().catch(() => {});
  }
}
