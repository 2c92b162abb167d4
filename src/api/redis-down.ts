import type { Context, Next } from 'koa';
import { redisDownPage } from '../dashboard/pages.js';

/** How long a client is asked to wait before trying again while Redis is away (seconds). */
export const REDIS_RETRY_AFTER_S = 5;

/**
 * Answers at once while Redis is unreachable: without it every request waits out the client
 * connection's retries (6–20 s) and then fails with a 500 that says nothing. API callers get a
 * 503 with Retry-After; a person in a browser gets a page that says what to check.
 * `problem` returns why Redis is unreachable, or undefined when it answers.
 */
export function redisUnavailable(problem: () => string | undefined) {
  return async (ctx: Context, next: Next) => {
    const why = problem();
    // The stylesheet of the error page itself is served from memory.
    if (ctx.path.startsWith('/assets/')) return next();
    if (!why) {
      try {
        return await next();
      } catch (err) {
        // A request already under way when Redis went: its command failed after the retries.
        const now = problem();
        if (!now) throw err;
        return answer(ctx, now);
      }
    }
    answer(ctx, why);
  };
}

function answer(ctx: Context, why: string) {
  ctx.status = 503;
  ctx.set('Retry-After', String(REDIS_RETRY_AFTER_S));
  ctx.set('Cache-Control', 'no-store');
  if (!ctx.path.startsWith('/api/') && ctx.accepts('json', 'html') === 'html') {
    ctx.type = 'text/html; charset=utf-8';
    ctx.body = redisDownPage(why);
  } else {
    ctx.body = { error: { code: 'redis-unavailable', message: `${why}; try again shortly` } };
  }
}
