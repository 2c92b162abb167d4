import { createHash, timingSafeEqual } from 'node:crypto';
import type { Context, Next } from 'koa';
import { SESSION_COOKIE, SESSION_TTL_S, type Sessions } from '../dashboard/sessions.js';
import type { AuthLimiter } from './auth-limit.js';
import { BOARD_PATH } from './board.js';

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

/**
 * Whether a request's Origin is the hub itself: the address it was reached at, or HUB_PUBLIC_URL.
 * Browsers send Origin with every cross-site POST and websocket; a request without one did not
 * come from another site's page.
 */
export function sameOrigin(
  origin: string | undefined,
  host: string | undefined,
  publicUrl?: string,
): boolean {
  if (!origin) return true;
  if (origin === 'null') return false;
  const allowed = new Set<string>();
  if (host) allowed.add(`http://${host}`).add(`https://${host}`);
  if (publicUrl) allowed.add(new URL(publicUrl).origin);
  return allowed.has(origin);
}

const STATE_CHANGING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

export interface AuthOptions {
  apiToken: string;
  limiter: AuthLimiter;
  sessions: Sessions;
  publicUrl?: string;
  secureCookie: boolean;
}

/**
 * Everything behind it needs HUB_API_TOKEN, as a bearer token (scripts), HTTP Basic password
 * (curl -u) or the dashboard's session cookie. A cookie is sent by the browser on its own, so a
 * state-changing request carried by one must also prove it came from the dashboard: the session's
 * CSRF token in `X-CSRF-Token`, or, for Bull Board's own page (which cannot send it), an Origin
 * that is the hub. A browser that is not signed in is sent to the sign-in page.
 */
export function requireAuth(opts: AuthOptions) {
  return async (ctx: Context, next: Next) => {
    const given = credentialOf(ctx);
    if (given) {
      // A held address is refused whatever it sent: a right guess looks like a wrong one.
      const right = sameSecret(given, opts.apiToken);
      const wait = await opts.limiter.attempt(ctx.ip, right);
      if (wait > 0) return tooManyAttempts(ctx, wait);
      if (right) {
        ctx.state.auth = 'token';
        return next();
      }
    }
    const cookie = ctx.cookies.get(SESSION_COOKIE);
    const session = given ? null : await opts.sessions.get(cookie);
    if (session) {
      if (STATE_CHANGING.has(ctx.method)) {
        const csrf = ctx.get('x-csrf-token');
        const viaHeader = !!csrf && sameSecret(csrf, session.csrf);
        const boardSameOrigin =
          ctx.path.startsWith(`${BOARD_PATH}/`) &&
          !!ctx.get('origin') &&
          sameOrigin(ctx.get('origin'), ctx.get('host'), opts.publicUrl);
        if (!viaHeader && !boardSameOrigin) {
          ctx.status = 403;
          ctx.body = {
            error: {
              code: 'csrf',
              message: 'this request did not come from the dashboard: reload the page and try again',
            },
          };
          return;
        }
      }
      ctx.state.auth = 'session';
      ctx.state.session = session;
      // Sliding expiry: the cookie lives as long as the session does.
      setSessionCookie(ctx, cookie!, opts.secureCookie);
      return next();
    }
    if (cookie && !given) setSessionCookie(ctx, null, opts.secureCookie);
    if (ctx.method === 'GET' && ctx.accepts(['json', 'html']) === 'html' && !given) {
      ctx.redirect(`/login?next=${encodeURIComponent(ctx.originalUrl)}`);
      return;
    }
    ctx.status = 401;
    ctx.set('WWW-Authenticate', 'Bearer realm="thopter-hub"');
    ctx.body = {
      error: {
        code: 'unauthorized',
        message: given
          ? 'the token is wrong: use the HUB_API_TOKEN the hub printed at its first start'
          : 'send Authorization: Bearer <HUB_API_TOKEN>, or sign in to the dashboard at /login',
      },
    };
  };
}

/** 429 for an address that sent too many wrong tokens: when to try again, and nothing else. */
export function tooManyAttempts(ctx: Context, seconds: number) {
  ctx.status = 429;
  ctx.set('Retry-After', String(seconds));
  ctx.body = {
    error: {
      code: 'too-many-attempts',
      message: `too many wrong tokens from this address: try again in ${seconds} s with the HUB_API_TOKEN the hub printed`,
    },
  };
}

/**
 * Sets (or with null, clears) the session cookie: http-only, same-site strict, and Secure when
 * HUB_PUBLIC_URL is https (TLS then ends at a proxy in front of the hub, which Koa cannot see).
 */
export function setSessionCookie(ctx: Context, value: string | null, secure: boolean) {
  if (secure) ctx.cookies.secure = true;
  ctx.cookies.set(SESSION_COOKIE, value, {
    httpOnly: true,
    sameSite: 'strict',
    secure,
    path: '/',
    maxAge: value ? SESSION_TTL_S * 1000 : 0,
    overwrite: true,
  });
}
