import { Router } from '@koa/router';
import Koa from 'koa';
import type { ScannerDeps } from '../scanner/github.js';
import { webhookRoutes } from '../scanner/webhook.js';
import type { DashboardDeps } from '../dashboard/routes.js';
import { dashboardRoutes, openDashboardRoutes } from '../dashboard/routes.js';
import { requireAuth } from './auth.js';
import { bullBoard } from './board.js';
import { goldenRoutes } from './golden.js';
import { errorMiddleware } from './http.js';
import { REDIS_RETRY_AFTER_S, redisUnavailable } from './redis-down.js';
import { statusRoutes, thopterRoutes } from './thopters.js';

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
    deps.log.error({ err: err.message, stack: err.stack, path: ctx?.path }, 'api error');
  });
  app.use(async (ctx, next) => {
    const started = Date.now();
    await next();
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
  app.use(statusRoutes(deps).routes());
  // Authenticated by GitHub's signature.
  app.use(webhookRoutes(deps).routes());

  // Everything else, whatever its path, needs HUB_API_TOKEN or a dashboard session: deny by default.
  app.use(
    requireAuth({
      apiToken: deps.apiToken,
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
  const golden = goldenRoutes(deps);
  app.use(golden.routes()).use(golden.allowedMethods());
  app.use(bullBoard(Object.values(deps.queues.queues)));
  return app;
}
