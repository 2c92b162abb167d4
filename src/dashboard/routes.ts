import { Router } from '@koa/router';
import type { Context } from 'koa';
import { sameOrigin, sameSecret, setSessionCookie } from '../api/auth.js';
import type { AuthLimiter } from '../api/auth-limit.js';
import { HttpError, readRaw } from '../api/http.js';
import type { Metrics } from '../metrics.js';
import type { TransportPool } from '../processors/deps.js';
import type { HubQueues } from '../queues/index.js';
import type { ThopterRecord } from '../thopters/record.js';
import type { ThopterStore } from '../thopters/store.js';
import type { TranscriptArchive } from '../transcripts/archive.js';
import { readTranscripts, transcriptFiles } from '../transcripts/machine.js';
import type { Asset } from './assets.js';
import type { DashboardFeed } from './feed.js';
import { html } from './html.js';
import {
  loginPage,
  logPage,
  mainPage,
  terminalPage,
  thopterDetail,
  thopterPage,
  usagePage,
} from './pages.js';
import type { UsageSummary } from '../usage/totals.js';
import { renderSessionLog, transcriptTag } from './session-log.js';
import { SESSION_COOKIE, type DashboardSession, type Sessions } from './sessions.js';

export interface DashboardDeps {
  apiToken: string;
  authLimiter: AuthLimiter;
  sessions: Sessions;
  store: ThopterStore;
  queues: HubQueues;
  transports: TransportPool;
  transcripts: TranscriptArchive;
  feed: DashboardFeed;
  assets: Map<string, Asset>;
  metrics: Metrics;
  repositories: () => string[];
  /** Today's and this month's usage, for the usage page. */
  usage: () => Promise<UsageSummary>;
  publicUrl?: string;
  secureCookie: boolean;
}

const THOPTER_ID = /^thopter-[a-z0-9-]{1,80}$/;

/** Where to go after signing in: a path on this hub, never another site. */
function safeNext(next: unknown): string {
  return typeof next === 'string' && next.startsWith('/') && !next.startsWith('//') && !next.includes('\\')
    ? next
    : '/';
}

function page(ctx: Context, body: string, status = 200) {
  ctx.status = status;
  ctx.type = 'text/html; charset=utf-8';
  ctx.set('Cache-Control', 'no-store');
  ctx.body = body;
}

/** Sign-in and the static assets: reachable without a session. */
export function openDashboardRoutes(deps: DashboardDeps): Router {
  const router = new Router({ sensitive: true, strict: true });
  router.get('/login', (ctx) => page(ctx, loginPage(safeNext(ctx.query.next))));
  router.post('/login', async (ctx) => {
    // A sign-in posted from another site's page would sign the browser in to the attacker's hub.
    if (!sameOrigin(ctx.get('origin') || undefined, ctx.get('host'), deps.publicUrl)) {
      throw new HttpError(403, 'csrf', 'sign in from the hub’s own sign-in page');
    }
    const form = new URLSearchParams((await readRaw(ctx, 16 * 1024)).toString('utf8'));
    const next = safeNext(form.get('next'));
    const token = form.get('token') ?? '';
    const right = !!token && sameSecret(token, deps.apiToken);
    const wait = await deps.authLimiter.attempt(ctx.ip, right);
    if (wait > 0) {
      ctx.set('Retry-After', String(wait));
      return page(
        ctx,
        loginPage(next, `Too many wrong tokens from this address: try again in ${wait} seconds.`),
        429,
      );
    }
    if (!right) {
      return page(
        ctx,
        loginPage(
          next,
          'That is not the hub’s token. Copy HUB_API_TOKEN (or DATA_DIR/hub-api-token) and try again.',
        ),
        401,
      );
    }
    const { id } = await deps.sessions.create();
    setSessionCookie(ctx, id, deps.secureCookie);
    ctx.status = 303;
    ctx.redirect(next);
  });
  router.get('/assets/:name', (ctx) => {
    const asset = deps.assets.get(ctx.params.name!);
    if (!asset) throw new HttpError(404, 'not-found', 'no such asset');
    ctx.set('ETag', asset.etag);
    ctx.set('Cache-Control', 'no-cache');
    if (ctx.get('if-none-match') === asset.etag) {
      ctx.status = 304;
      return;
    }
    ctx.type = asset.type;
    ctx.body = asset.body;
  });
  return router;
}

/** The pages, the live feed, the session log, metrics and sign-out: behind the session or the token. */
export function dashboardRoutes(deps: DashboardDeps): Router {
  const router = new Router({ sensitive: true, strict: true });
  const csrfOf = (ctx: Context) => (ctx.state.session as DashboardSession | undefined)?.csrf ?? '';
  const load = async (id: string | undefined): Promise<ThopterRecord> => {
    const record = id && THOPTER_ID.test(id) ? await deps.store.get(id) : null;
    if (!record) throw new HttpError(404, 'not-found', `no thopter ${id}: it may have been removed`);
    return record;
  };
  const detail = async (r: ThopterRecord) =>
    thopterDetail(
      r,
      await deps.store.events(r.id),
      r.state === 'queued' ? await deps.queues.queuePosition(r.id) : null,
    );

  router.post('/logout', async (ctx) => {
    await deps.sessions.destroy(ctx.cookies.get(SESSION_COOKIE));
    setSessionCookie(ctx, null, deps.secureCookie);
    ctx.status = 204;
  });
  router.get('/', (ctx) => page(ctx, mainPage(csrfOf(ctx), deps.repositories())));
  router.get('/dashboard/events', (ctx) => deps.feed.attach(ctx));
  router.get('/dashboard/summary', async (ctx) => {
    ctx.body = await deps.feed.summary();
  });
  router.get('/thopters/:id', async (ctx) => {
    const r = await load(ctx.params.id);
    const body = await detail(r);
    if (ctx.query.fragment) {
      ctx.type = 'text/html; charset=utf-8';
      ctx.set('Cache-Control', 'no-store');
      ctx.body = body.value;
      return;
    }
    page(ctx, thopterPage(csrfOf(ctx), r, body));
  });
  router.get('/thopters/:id/terminal', async (ctx) => {
    const r = await load(ctx.params.id);
    if (r.state !== 'running' && r.state !== 'kept') {
      return page(
        ctx,
        thopterPage(
          csrfOf(ctx),
          r,
          html`<p class="error">
              This thopter is ${r.state}: only a running (or kept) thopter has a terminal.
            </p>
            ${await detail(r)}`,
        ),
        409,
      );
    }
    page(ctx, terminalPage(csrfOf(ctx), r, ctx.query.mode === 'view'));
  });
  router.get('/thopters/:id/log', async (ctx) => {
    const r = await load(ctx.params.id);
    let body;
    let tag: string | undefined;
    if (!r.machine || r.state === 'destroyed' || r.state === 'failed') {
      // Kept by the teardown before the machine went.
      const kept = await deps.transcripts.load(r.id);
      body = kept.length
        ? html`<p class="note">This thopter has ended (${r.state}); its transcript as it stood then.</p>
            ${renderSessionLog(kept)}`
        : html`<p class="empty">This thopter's machine is gone (${r.state}), and no transcript was kept.</p>`;
    } else {
      try {
        const t = await deps.transports.get(r.machine.id);
        const files = await transcriptFiles(t);
        tag = transcriptTag(files);
        if (ctx.query.fragment && ctx.get('if-none-match') === tag) {
          ctx.status = 304;
          return;
        }
        body = renderSessionLog(await readTranscripts(t, files));
      } catch (err) {
        body = html`<p class="error">The transcript could not be read: ${(err as Error).message}</p>`;
      }
    }
    if (ctx.query.fragment) {
      if (tag) ctx.set('ETag', tag);
      ctx.set('Cache-Control', 'no-cache');
      ctx.type = 'text/html; charset=utf-8';
      ctx.body = body.value;
      return;
    }
    page(ctx, logPage(csrfOf(ctx), r, body));
  });
  router.get('/usage', async (ctx) => page(ctx, usagePage(csrfOf(ctx), await deps.usage())));
  router.get('/metrics', async (ctx) => {
    ctx.type = 'text/plain; version=0.0.4; charset=utf-8';
    ctx.body = await deps.metrics.render(deps.store, deps.queues);
  });
  return router;
}
