import { createServer, type Server } from 'node:http';
import type { Socket } from 'node:net';
import { Router } from '@koa/router';
import Koa from 'koa';
import type { ScannerDeps } from '../scanner/github.js';
import { webhookRoutes } from '../scanner/webhook.js';
import type { DashboardDeps } from '../dashboard/routes.js';
import { dashboardRoutes, openDashboardRoutes } from '../dashboard/routes.js';
import { requireAuth } from './auth.js';
import { bullBoard } from './board.js';
import { securityHeaders } from './csp.js';
import { goldenRoutes } from './golden.js';
import { errorMiddleware, isClientFault, markAuthenticated, onAuthenticated } from './http.js';
import { REDIS_RETRY_AFTER_S, redisUnavailable } from './redis-down.js';
import { statusRoutes, thopterRoutes } from './thopters.js';
import { usageRoutes } from './usage.js';

export interface ApiDeps extends ScannerDeps {
  apiToken: string;
  dashboard: DashboardDeps;
  /** Why Redis cannot be reached right now, or undefined when it answers. */
  redisProblem: () => string | undefined;
}

export function createApi(deps: ApiDeps): Koa {
  const app = new Koa();
  app.proxy = false;
  app.on('error', (err: Error, ctx?: Koa.Context) => {
    if (isClientFault(err)) {
      // A client that went away or sent a broken request: nothing in the hub to fix, and anyone
      // can cause it, so it must not flood the log.
      deps.log.debug({ err: err.message, path: ctx?.path }, 'request cut short by the client');
      return;
    }
    deps.log.error({ err: err.message, stack: err.stack, path: ctx?.path }, 'api error');
  });
  app.use(async (ctx, next) => {
    const started = Date.now();
    await next();
    if (ctx.state.auth) markAuthenticated(ctx.req.socket);
    deps.log.debug(
      { method: ctx.method, path: ctx.path, status: ctx.status, ms: Date.now() - started },
      'request',
    );
  });
  // Observer posts are counted for /metrics with the status they were answered (outside the
  // error handler, which decides it).
  app.use(async (ctx, next) => {
    await next();
    if (ctx.method === 'POST' && /^\/api\/thopters\/[^/]+\/status$/.test(ctx.path)) {
      deps.dashboard.metrics.inc('thopter_status_posts_total', { status: ctx.status });
    }
  });
  app.use(securityHeaders);
  app.use(errorMiddleware);

  // Case-sensitive, strict routes: `/API/thopters` or `/ready/` is not another way in.
  const open = new Router({ sensitive: true, strict: true });
  open.get('/health', (ctx) => {
    const problem = deps.redisProblem();
    if (problem) {
      ctx.status = 503;
      ctx.set('Retry-After', String(REDIS_RETRY_AFTER_S));
      ctx.body = { status: 'redis-down', redis: problem };
      return;
    }
    ctx.body = { status: 'ok', redis: 'ok' };
  });
  app.use(open.routes());
  app.use(redisUnavailable(deps.redisProblem));
  // Sign-in and the dashboard's script and styles.
  app.use(openDashboardRoutes(deps.dashboard).routes());
  // Authenticated with each thopter's own token, not the hub's.
  app.use(statusRoutes({ store: deps.store, prices: deps.config.prices }).routes());
  // Authenticated by GitHub's signature.
  app.use(webhookRoutes(deps).routes());

  // Everything else, whatever its path, needs HUB_API_TOKEN or a dashboard session: deny by default.
  app.use(
    requireAuth({
      apiToken: deps.apiToken,
      limiter: deps.dashboard.authLimiter,
      sessions: deps.dashboard.sessions,
      publicUrl: deps.dashboard.publicUrl,
      secureCookie: deps.dashboard.secureCookie,
    }),
  );
  const dashboard = dashboardRoutes(deps.dashboard);
  app.use(dashboard.routes()).use(dashboard.allowedMethods());

  const ready = new Router({ sensitive: true, strict: true });
  ready.get('/ready', async (ctx) => {
    try {
      await deps.redis.ping();
      // A repository whose token fails is reported here; the others keep working.
      const github = await deps.github.health();
      const failing = Object.entries(github).filter(([, h]) => h && !h.ok);
      ctx.body = {
        ready: true,
        redis: 'ok',
        github,
        ...(failing.length ? { degraded: failing.map(([r]) => r) } : {}),
      };
    } catch (err) {
      ctx.status = 503;
      ctx.body = { ready: false, redis: (err as Error).message };
    }
  });
  app.use(ready.routes());
  const api = thopterRoutes(deps);
  app.use(api.routes()).use(api.allowedMethods());
  const usage = usageRoutes(deps);
  app.use(usage.routes()).use(usage.allowedMethods());
  const golden = goldenRoutes(deps);
  app.use(golden.routes()).use(golden.allowedMethods());
  app.use(bullBoard(Object.values(deps.queues.queues)));
  return app;
}

/** The longest a client may take to send its headers, within HUB_REQUEST_TIMEOUT. */
const HEADERS_TIMEOUT_MS = 10_000;

/**
 * Listens with deadlines on what clients send: Node's defaults let a sender hold a connection for
 * 300 s by trickling its body. A request not received in time is answered 408 and closed by Node;
 * the deadline covers receiving only, so the live feed and terminals stay open as long as they like.
 */
export function listen(
  app: Koa,
  opts: { port: number; host: string; requestTimeoutMs: number; maxUnauthenticated: number },
): Promise<Server> {
  const server = createServer(
    {
      requestTimeout: opts.requestTimeoutMs,
      headersTimeout: Math.min(HEADERS_TIMEOUT_MS, opts.requestTimeoutMs),
      // How often Node looks for overdue requests (its default, 30 s, would double the deadline).
      connectionsCheckingInterval: Math.min(1000, opts.requestTimeoutMs),
    },
    app.callback(),
  );
  // Past the cap the oldest unauthenticated connection is closed, never a new one: whoever has the
  // token still gets in during a flood, and whoever authenticated is no longer counted. (A cap on
  // all connections would lock the API out too; one per address would count every observer behind
  // one proxy together.)
  const waiting = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    waiting.add(socket);
    onAuthenticated(socket, () => waiting.delete(socket));
    socket.once('close', () => waiting.delete(socket));
    if (waiting.size > opts.maxUnauthenticated) {
      const oldest = waiting.values().next().value!;
      waiting.delete(oldest);
      oldest.destroy();
    }
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve(server));
  });
}
