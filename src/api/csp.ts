import type { Context, Next } from 'koa';
import { BOARD_PATH } from './board.js';

/**
 * The dashboard's pages: script only from /assets (the bundled client), so a link or text that
 * slipped past escaping cannot run script in the hub's origin, where it could read the CSRF token.
 * Inline styles stay allowed: xterm.js adds its own <style> element, and a style cannot act.
 */
const HUB_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

/**
 * Bull Board's page: its scripts are files too (its config is an inline JSON block, which is not
 * run), but it sets <base href>, inline styles, and loads its fonts from Google.
 */
const BOARD_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline' https://fonts.googleapis.com",
  "font-src 'self' https://fonts.gstatic.com",
  "img-src 'self' data:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join('; ');

/** Sets the Content-Security-Policy on every response, errors and redirects included. */
export async function securityHeaders(ctx: Context, next: Next) {
  const board = ctx.path === BOARD_PATH || ctx.path.startsWith(`${BOARD_PATH}/`);
  ctx.set('Content-Security-Policy', board ? BOARD_POLICY : HUB_POLICY);
  ctx.set('X-Content-Type-Options', 'nosniff');
  await next();
}
