import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import path from 'node:path';
import type { Redis } from 'ioredis';
import { AuthLimiter } from './api/auth-limit.js';
import { createApi, listen } from './api/server.js';
import { buildAssets } from './dashboard/assets.js';
import { DashboardFeed } from './dashboard/feed.js';
import { Sessions } from './dashboard/sessions.js';
import { usageSummary } from './usage/totals.js';
import { attachTerminals } from './dashboard/terminal.js';
import { Metrics } from './metrics.js';
import type { Config } from './config.js';
import type { Logger } from './log.js';
import { startWorkers, TransportPool, type HubWorkers } from './processors/index.js';
import { Prompts } from './prompts.js';
import { createProvider } from './providers/index.js';
import type { Provider } from './providers/types.js';
import { HubQueues } from './queues/index.js';
import { reconcile } from './reconcile.js';
import { connectRedis, startEmbeddedRedis, type EmbeddedRedis, type RedisTarget } from './redis.js';
import { RecordChanges } from './thopters/changes.js';
import { ThopterStore } from './thopters/store.js';
import { TranscriptArchive } from './transcripts/archive.js';
import { GitHubClients } from './github/clients.js';
import { labelOf } from './scanner/intake.js';
import { Intake } from './scanner/pause.js';

const RECONCILE_EVERY_MS = 10 * 60_000;
/** How often the App's installations are listed again; `installation` webhooks do it at once. */
const INSTALLATIONS_EVERY_MS = 10 * 60_000;

export interface Hub {
  /** Where the API listens, e.g. http://127.0.0.1:8080. */
  url: string;
  apiToken: string;
  store: ThopterStore;
  queues: HubQueues;
  provider: Provider;
  workers: HubWorkers;
  /**
   * Graceful stop: hands active thopters to other hubs, then closes everything in reverse order.
   * `onStep` learns each step as it begins, so a caller that gives up can say what was left.
   */
  stop(onStep?: (what: string) => void): Promise<void>;
}

export interface HubOptions {
  /** Replaces the provider THOPTER_PROVIDER names (tests). */
  provider?: Provider;
  /** Called with a newly generated HUB_API_TOKEN, once. Default: printed to stderr. */
  onTokenGenerated?: (token: string, file: string) => void;
}

/**
 * The composition root: config → logger → redis → provider → queues → workers → api. Each step
 * registers how to undo itself; stop() runs them in reverse.
 */
export async function startHub(config: Config, log: Logger, options: HubOptions = {}): Promise<Hub> {
  const closers: Array<{ what: string; close: () => Promise<void> }> = [];
  const onStop = (what: string, close: () => Promise<void>) => closers.push({ what, close });
  const stop = async (onStep?: (what: string) => void) => {
    for (const { what, close } of closers.reverse().splice(0)) {
      onStep?.(what);
      try {
        await close();
      } catch (err) {
        log.warn({ err: (err as Error).message, step: what }, 'error while stopping');
      }
    }
  };
  let embedded: EmbeddedRedis | undefined;
  try {
    mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
    const apiToken = config.apiToken ?? loadOrCreateToken(config.dataDir, options.onTokenGenerated);

    let target: RedisTarget;
    if (config.redisUrl) {
      target = { url: config.redisUrl };
    } else {
      const started = await startEmbeddedRedis(path.join(config.dataDir, 'redis'), log);
      embedded = started;
      onStop('stopping the embedded redis-server', () => started.stop());
      target = { socket: started.socket };
    }
    const client: Redis = connectRedis(target, 'client', log);
    const workerConnection: Redis = connectRedis(target, 'worker', log);
    onStop('closing Redis connections', async () => {
      client.disconnect();
      workerConnection.disconnect();
    });
    await client.ping();

    const provider = options.provider ?? createProvider(config, log, client);
    onStop('closing the provider', () => provider.close());
    await provider.start?.();
    const store = new ThopterStore(client, config.redisPrefix);
    const changes = await RecordChanges.start(client, store.changeChannel, log, store.sessionChannel);
    onStop('closing record changes', () => changes.close());
    const prompts = new Prompts(config.promptsDir);
    await prompts.names().catch(() => {
      throw new Error(`PROMPTS_DIR ${config.promptsDir} cannot be read: point it at a folder of .md prompts`);
    });

    // Producers use the fail-fast connection: an API call errors out when Redis is away instead
    // of hanging; a lifecycle job that errors that way is retried.
    const queues = new HubQueues(client, config.redisPrefix, log);
    onStop('closing queues', () => queues.close());
    await queues.start(config.maxThopters);

    const transports = new TransportPool(provider);
    const transcripts = new TranscriptArchive(client, config.redisPrefix);
    onStop('closing transports', () => transports.closeAll());
    const metrics = new Metrics(client, config.redisPrefix);
    onStop('closing metrics', () => metrics.close());
    const github = new GitHubClients(config, client, log, metrics);
    const intake = new Intake(client, config.redisPrefix);
    const publicUrl = config.publicUrl ?? `http://localhost:${config.port}`;
    const announce = async (thopterId: string) => {
      const record = await store.get(thopterId);
      if (record?.request.source !== 'github') return;
      await queues.enqueue('comment', { thopterId, label: labelOf(record.request) });
    };
    const queuePullRequest = async (thopterId: string) => {
      const record = await store.get(thopterId);
      // Only a work branch (a machine was made) of a repository on GitHub (in
      // GITHUB_INTEGRATION_JSON, or reached by the GitHub App) can have one.
      const { repository } = record?.request ?? {};
      if (!record?.machine || !repository || !(config.repositories[repository] || github.for(repository)))
        return;
      await queues.enqueue('pull-request', { thopterId, label: labelOf(record.request) });
    };
    await reconcile({ store, queues, provider, log, retentionMs: config.retentionMs });
    if (github.app) {
      // Before the workers start: a queued comment or clone for an App repository finds its client.
      // Not fatal: a bad key or no installation is shown on /ready and in the log, and the next
      // refresh (or an installation webhook) picks the repositories up once it is fixed.
      await github.refreshInstallations();
      const installations = setInterval(() => void github.refreshInstallations(), INSTALLATIONS_EVERY_MS);
      installations.unref();
      onStop('stopping the installation refresh', async () => clearInterval(installations));
    }
    const scanner = { config, redis: client, store, queues, prompts, provider, github, intake, log };
    const workers = startWorkers(
      {
        config,
        log,
        store,
        changes,
        queues,
        provider,
        prompts,
        transports,
        transcripts,
        announce,
        queuePullRequest,
        metrics,
        thopterTokens: github,
      },
      { scanner, github: { store, queues, github, transcripts, publicUrl, log, config } },
      workerConnection,
    );
    onStop('handing active thopters back', () => workers.close());
    if (github.repositories.length > 0 || github.app) {
      await queues.schedulePolling(config.github.pollIntervalS);
      log.info(
        { repositories: github.repositories, everySeconds: config.github.pollIntervalS },
        'watching GitHub',
      );
    }
    // The line moves as thopters start and end: each queued GitHub thopter's comment is rendered
    // again, and edited only when its place changed (at most one edit per thopter per
    // GITHUB_QUEUE_REFRESH_INTERVAL).
    // Comment jobs are deduplicated per thopter, so hubs doing this at once add nothing.
    const queueRefresh = setInterval(() => {
      void (async () => {
        for (const t of await store.list({ limit: 10_000, states: ['queued'] })) {
          if (t.request.source === 'github') await announce(t.id);
        }
      })().catch((err) => log.warn({ err: err.message }, 'queue refresh failed'));
    }, config.github.queueRefreshMs);
    queueRefresh.unref();
    onStop('stopping the queue refresh', async () => clearInterval(queueRefresh));
    const timer = setInterval(() => {
      reconcile({ store, queues, provider, log, retentionMs: config.retentionMs }).catch((err) =>
        log.warn({ err: err.message }, 'reconcile failed'),
      );
    }, RECONCILE_EVERY_MS);
    timer.unref();
    onStop('stopping reconciliation', async () => clearInterval(timer));

    const sessions = new Sessions(client, config.redisPrefix);
    const feed = new DashboardFeed({ store, changes, queues, provider, intake, github, log });
    onStop('closing the dashboard feed', async () => feed.close());
    const dashboard = {
      apiToken,
      authLimiter: new AuthLimiter(client, config.redisPrefix, config.authFailureLimit),
      sessions,
      store,
      queues,
      transports,
      transcripts,
      feed,
      metrics,
      assets: await buildAssets(),
      repositories: () => github.repositories,
      usage: () => usageSummary(client, config.redisPrefix),
      publicUrl: config.publicUrl,
      secureCookie: config.publicUrl?.startsWith('https:') ?? false,
    };
    const redisProblem = () => {
      if (embedded && !embedded.up) {
        return "the hub's embedded redis-server stopped and the hub is restarting it (if this lasts, see redis.log under DATA_DIR/redis)";
      }
      if (client.status === 'ready') return undefined;
      return embedded
        ? 'the hub is reconnecting to its embedded redis-server'
        : 'the hub cannot reach the Redis that REDIS_URL names: check that it is running and reachable from the hub, and the hub log for the connection error';
    };
    const app = createApi({ ...scanner, apiToken, dashboard, redisProblem });
    const server: Server = await listen(app, {
      ...config,
      maxUnauthenticated: config.maxUnauthenticatedConnections,
    });
    onStop(
      'closing the HTTP server',
      () =>
        new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        }),
    );
    const closeTerminals = attachTerminals(server, {
      sessions,
      store,
      transports,
      publicUrl: config.publicUrl,
      log,
    });
    onStop('closing terminals', async () => closeTerminals());
    const address = server.address();
    const port = typeof address === 'object' && address ? address.port : config.port;
    const url = `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`;
    log.info({ url, provider: provider.name, maxThopters: config.maxThopters }, 'hub started');
    return { url, apiToken, store, queues, provider, workers, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** HUB_API_TOKEN when it is not set: generated once, kept under DATA_DIR, printed only when new. */
function loadOrCreateToken(dataDir: string, onGenerated?: (token: string, file: string) => void): string {
  const file = path.join(dataDir, 'hub-api-token');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const token = randomBytes(24).toString('base64url');
  writeFileSync(file, token + '\n', { mode: 0o600 });
  (onGenerated ?? printToken)(token, file);
  return token;
}

function printToken(token: string, file: string) {
  // Printed straight to the terminal, never through the logger: logs must not hold secrets.
  process.stderr.write(
    `\nHUB_API_TOKEN was not set, so the hub generated one (kept in ${file}):\n\n    ${token}\n\n` +
      'Use it as "Authorization: Bearer <token>" for the API, and as the password for /admin/queues.\n\n',
  );
}
