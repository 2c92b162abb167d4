import { createHash, timingSafeEqual } from 'node:crypto';
import type { Context, Next } from 'koa';

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Constant-time comparison of two secrets of any length. */
export function sameSecret(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

/** The credential in a request: `Bearer TOKEN`, or HTTP Basic with the token as password (for browsers). */
export function credentialOf(ctx: Context): string | undefined {
  const header = ctx.get('authorization');
  const bearer = /^Bearer\s+(\S+)$/i.exec(header);
  if (bearer) return bearer[1];
  const basic = /^Basic\s+(\S+)$/i.exec(header);
  if (basic) {
    const decoded = Buffer.from(basic[1]!, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    return colon >= 0 ? decoded.slice(colon + 1) : decoded;
  }
  return undefined;
}

/** Requires HUB_API_TOKEN. Browsers get a Basic challenge so Bull Board opens with a password prompt. */
export function requireHubToken(token: string) {
  return async (ctx: Context, next: Next) => {
    const given = credentialOf(ctx);
    if (given && sameSecret(given, token)) return next();
    ctx.status = 401;
    ctx.set('WWW-Authenticate', 'Bearer realm="thopter-hub", Basic realm="thopter-hub"');
    ctx.body = {
      error: {
        code: 'unauthorized',
        message: given
          ? 'the token is wrong: use the HUB_API_TOKEN the hub printed at its first start'
          : 'send Authorization: Bearer <HUB_API_TOKEN>',
      },
    };
  };
}
