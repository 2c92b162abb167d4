import { Router } from '@koa/router';
import type { Redis } from 'ioredis';
import { usageSummary } from '../usage/totals.js';

/** GET /api/usage: today's and this month's usage (UTC), by repository and by person. */
export function usageRoutes(deps: { redis: Redis; config: { redisPrefix: string } }): Router {
  const router = new Router({ sensitive: true, strict: true });
  router.get('/api/usage', async (ctx) => {
    ctx.body = await usageSummary(deps.redis, deps.config.redisPrefix);
  });
  return router;
}
