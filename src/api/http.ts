import type { Context } from 'koa';
import type { z } from 'zod';
import { ThopterError } from '../errors.js';
import { OverBudgetError } from '../scanner/budget.js';

/** The largest request body the API reads. Issue bodies are at most 64 k characters on GitHub. */
export const MAX_BODY_BYTES = 512 * 1024;

/** An HTTP error with a body that says what to fix. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

/** Reads a JSON body, refusing anything larger than `limit` before it is buffered. */
export async function readJson(ctx: Context, limit = MAX_BODY_BYTES): Promise<unknown> {
  if (!ctx.is('application/json')) {
    throw new HttpError(
      415,
      'unsupported-media-type',
      'send the body as JSON with Content-Type: application/json',
    );
  }
  const raw = await readRaw(ctx, limit);
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch {
    throw new HttpError(400, 'bad-json', 'the body is not valid JSON');
  }
}

/** Reads the raw body, refusing anything larger than `limit` before it is buffered. */
export async function readRaw(ctx: Context, limit: number): Promise<Buffer> {
  const declared = Number(ctx.get('content-length') || 0);
  if (declared > limit) throw new HttpError(413, 'too-large', `the body is over ${limit} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of ctx.req) {
      size += (chunk as Buffer).length;
      if (size > limit) {
        ctx.req.destroy();
        throw new HttpError(413, 'too-large', `the body is over ${limit} bytes`);
      }
      chunks.push(chunk as Buffer);
    }
  } catch (err) {
    if (err instanceof HttpError) throw err;
    // The client went away mid-body (or Node cut it off at HUB_REQUEST_TIMEOUT): nobody is left to
    // answer, and nothing in the hub went wrong.
    throw new HttpError(400, 'aborted', 'the connection closed before the whole body arrived');
  }
  return Buffer.concat(chunks);
}

/**
 * Caps how many bodies are read at once before their sender is known (a webhook delivery can be
 * checked only once read). Past the cap a request is refused at once, unread, so a flood of unsigned
 * posts holds at most `max` bodies of memory instead of one per post.
 */
export class ReadGate {
  private reading = 0;

  /** @param max bodies read at once. */
  constructor(readonly max: number) {}

  async read(ctx: Context, limit: number): Promise<Buffer> {
    if (this.reading >= this.max) {
      ctx.set('Retry-After', '1');
      throw new HttpError(503, 'busy', 'too many requests are being received: retry in a moment');
    }
    this.reading++;
    try {
      return await readRaw(ctx, limit);
    } finally {
      this.reading--;
    }
  }
}

/**
 * Errors a client causes on its own connection: it closed it mid-request (ECONNRESET, EPIPE, a
 * premature close), or sent what is not HTTP (Node's parser codes, HPE_*).
 */
export function isClientFault(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return (
    typeof code === 'string' &&
    (['ECONNRESET', 'EPIPE', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE'].includes(code) ||
      code.startsWith('HPE_'))
  );
}

/** Per connection not yet authenticated: what takes it off its server's list. */
const unauthenticated = new WeakMap<object, () => void>();

/** Registers what to do when `socket` carries its first authenticated request. */
export function onAuthenticated(socket: object, then: () => void) {
  unauthenticated.set(socket, then);
}

/**
 * A connection that carried an authenticated request (the hub's token, a dashboard session, a
 * thopter's token, a signed delivery) is no longer counted against HUB_MAX_UNAUTHENTICATED_CONNECTIONS.
 */
export function markAuthenticated(socket: object) {
  unauthenticated.get(socket)?.();
  unauthenticated.delete(socket);
}

/** Parses with a schema; a failure names the first bad field. */
export function parseWith<S extends z.ZodType>(schema: S, value: unknown): z.infer<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const field = issue.path.join('.') || undefined;
  throw new HttpError(400, 'bad-input', field ? `${field}: ${issue.message}` : issue.message, field);
}

/** Turns thrown errors into JSON responses; anything unexpected is a 500 without internals. */
export async function errorMiddleware(ctx: Context, next: () => Promise<unknown>) {
  try {
    await next();
  } catch (err) {
    if (err instanceof HttpError) {
      ctx.status = err.status;
      ctx.body = {
        error: { code: err.code, message: err.message, ...(err.field ? { field: err.field } : {}) },
      };
    } else if (err instanceof ThopterError && (err.code === 'bad-input' || err.code === 'not-found')) {
      ctx.status = err.code === 'bad-input' ? 422 : 404;
      const field = /^(\w+):/.exec(err.message)?.[1];
      ctx.body = { error: { code: err.code, message: err.message, ...(field ? { field } : {}) } };
    } else if (err instanceof ThopterError && err.code === 'conflict') {
      ctx.status = 409;
      const field = /^(\w+):/.exec(err.message)?.[1];
      ctx.body = { error: { code: err.code, message: err.message, ...(field ? { field } : {}) } };
    } else if (err instanceof OverBudgetError) {
      ctx.status = 429;
      ctx.set('Retry-After', String(Math.max(1, Math.ceil((err.until.getTime() - Date.now()) / 1000))));
      ctx.body = { error: { code: err.code, message: err.message, until: err.until.toISOString() } };
    } else if (err instanceof ThopterError && err.code === 'machine') {
      // The provider refused (a bad Fly token, no capacity): its message says what to fix.
      ctx.status = 502;
      ctx.body = { error: { code: 'provider', message: err.message } };
      ctx.app.emit('error', err, ctx);
    } else {
      ctx.status = 500;
      ctx.body = { error: { code: 'internal', message: 'internal error: see the hub log' } };
      ctx.app.emit('error', err, ctx);
    }
  }
  // A request answered before its body was read is not drained: its connection is closed instead.
  if (!ctx.req.complete && !ctx.headerSent) ctx.set('Connection', 'close');
}
