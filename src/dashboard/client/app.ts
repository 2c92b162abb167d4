// The dashboard in the browser: bundled by esbuild when the hub starts (src/dashboard/assets.ts).
// Each page is marked with <body data-page>; this file wires the one it is on.
import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';
import type { GoldenRow, Summary } from '../feed.js';
import type { Row } from '../rows.js';

const csrf = document.querySelector<HTMLMetaElement>('meta[name="csrf-token"]')?.content ?? '';

function esc(value: unknown): string {
  return String(value ?? '').replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!,
  );
}

/** A state-changing request, with the session's CSRF token. */
async function act(method: string, url: string): Promise<void> {
  const res = await fetch(url, { method, headers: { 'x-csrf-token': csrf }, credentials: 'same-origin' });
  if (res.status === 401) location.href = `/login?next=${encodeURIComponent(location.pathname)}`;
  if (!res.ok) {
    const body = (await res.json().catch(() => null)) as { error?: { message?: string } } | null;
    throw new Error(body?.error?.message ?? `${res.status} ${res.statusText}`);
  }
}

function ago(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return '';
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d`;
}

document.addEventListener('click', (event) => {
  const el = (event.target as HTMLElement).closest<HTMLElement>('[data-action]');
  if (!el) return;
  const action = el.dataset.action;
  const fail = (err: Error) => alert(err.message);
  if (action === 'sign-out') {
    act('POST', '/logout').then(() => (location.href = '/login'), fail);
  } else if (action === 'kill') {
    const id = el.dataset.id!;
    const what = el.dataset.title ? `“${el.dataset.title}”` : id;
    if (
      !confirm(
        `Kill the thopter working on ${what}? Its uncommitted work is saved to its branch first, then its machine and workspace are deleted.`,
      )
    )
      return;
    (el as HTMLButtonElement).disabled = true;
    el.textContent = 'Stopping…';
    act('DELETE', `/api/thopters/${encodeURIComponent(id)}`).catch(fail);
  } else if (action === 'pause' || action === 'resume') {
    (el as HTMLButtonElement).disabled = true;
    act('POST', `/api/intake/${action}`).then(() => document.dispatchEvent(new Event('summary-stale')), fail);
  }
});

// --- The main page ------------------------------------------------------------------------------

const FINAL = new Set(['destroyed', 'failed']);

/** The server sends only http(s) links; checked again here, since a `javascript:` one runs as the hub. */
const httpLink = (url: string | null) => (url && /^https?:\/\//i.test(url) ? url : null);

function card(r: Row, now: number): string {
  const issue = r.issue.number !== null ? `#${r.issue.number}` : '';
  const issueUrl = httpLink(r.issue.url);
  const issueLink = issueUrl ? `<a href="${esc(issueUrl)}">${esc(issue)}</a>` : esc(issue);
  const branch = r.workBranch
    ? httpLink(r.branchUrl)
      ? `<a href="${esc(r.branchUrl)}">${esc(r.workBranch)}</a>`
      : esc(r.workBranch)
    : '';
  const facts: string[] = [`age ${ago(r.createdAt, now)}`];
  if (r.condition === 'provisioning' && r.currentPhase) facts.push(`phase ${esc(r.currentPhase)}`);
  if (r.condition === 'queued') facts.push(r.queuePosition ? `#${r.queuePosition} in line` : 'queued');
  if (r.lastActivity) facts.push(`last activity ${ago(r.lastActivity, now)} ago`);
  if (r.idleSince) facts.push(`idle ${ago(r.idleSince, now)}`);
  if (r.stalledSince) facts.push(`stalled: no progress for ${ago(r.stalledSince, now)}`);
  if (r.agentRunning !== null) facts.push(r.agentRunning ? 'agent running' : 'agent not running');
  if (r.kept) facts.push(`failed: ${esc(r.kept.reason)}`, `machine kept until ${esc(r.kept.until)}`);
  if (r.warnings) facts.push(`${r.warnings} warning${r.warnings > 1 ? 's' : ''}`);
  const running = r.state === 'running' || r.state === 'kept';
  return `<article class="thopter ${esc(r.condition)}" data-id="${esc(r.id)}" data-condition="${esc(r.condition)}">
    <header><span class="badge ${esc(r.condition)}">${r.condition === 'kept' ? 'failed, kept' : esc(r.condition)}</span>
      <a class="title" href="/thopters/${esc(r.id)}">${esc(r.issue.title)}</a></header>
    <div class="where">${esc(r.repository)} ${issueLink} ${branch ? `· ${branch}` : ''}</div>
    <div class="facts">${facts.join(' · ')}</div>
    <div class="actions">
      ${running ? `<a class="button" href="/thopters/${esc(r.id)}/terminal">Terminal</a>` : ''}
      <a class="button" href="/thopters/${esc(r.id)}/log">Session log</a>
      ${r.state === 'stopping' ? '' : `<button type="button" class="danger" data-action="kill" data-id="${esc(r.id)}" data-title="${esc(r.issue.title)}">Kill</button>`}
    </div>
  </article>`;
}

function goldenRow(g: GoldenRow): string {
  return `<li><strong>${esc(g.name)}</strong> · ${esc(g.state)} · <code>${esc(g.location)}</code>${
    g.busy ? ` <span class="warn">⚠ ${esc(g.busy)}: copies from it are skipped</span>` : ' · idle'
  }</li>`;
}

function mainPage() {
  const rows = new Map<string, Row>();
  let summary: Summary | undefined;
  const $ = (id: string) => document.getElementById(id)!;
  const emptyHint = (document.getElementById('empty-hint') as HTMLTemplateElement).innerHTML;

  const render = () => {
    const now = Date.now();
    const all = [...rows.values()];
    const live = all
      .filter((r) => !FINAL.has(r.state))
      .sort((a, b) => b.createdAt.localeCompare(a.createdAt));
    const groups = new Map<string, Row[]>();
    for (const r of live) groups.set(r.requestedBy, [...(groups.get(r.requestedBy) ?? []), r]);
    $('count').textContent = live.length ? `(${live.length})` : '';
    $('thopters').innerHTML = live.length
      ? [...groups]
          .map(
            ([who, list]) =>
              `<section class="group"><h3>${esc(who)}</h3><div class="cards">${list.map((r) => card(r, now)).join('')}</div></section>`,
          )
          .join('')
      : emptyHint;
    const queued = live
      .filter((r) => r.state === 'queued')
      .sort((a, b) => (a.queuePosition ?? 1e9) - (b.queuePosition ?? 1e9));
    $('queue').innerHTML = queued.length
      ? `<ol class="queue">${queued
          .map(
            (r) =>
              `<li><span class="pos">${r.queuePosition ?? '–'}</span> <a href="/thopters/${esc(r.id)}">${esc(r.issue.title)}</a> · ${esc(r.repository)} · priority ${r.priority} · waiting ${ago(r.createdAt, now)}</li>`,
          )
          .join('')}</ol>`
      : '<p class="empty">Nothing is waiting: every request has a machine.</p>';
    const golden = summary?.goldenClaudes ?? [];
    $('golden').innerHTML = golden.length
      ? `<ul class="golden">${golden.map(goldenRow).join('')}</ul>`
      : '<p class="empty">No golden claude: thopters start without a login. Create one with <code>POST /api/golden-claudes</code> and log in to Claude on it.</p>';
    const ended = all
      .filter((r) => FINAL.has(r.state))
      .sort((a, b) => (b.endedAt ?? '').localeCompare(a.endedAt ?? ''));
    $('recent').innerHTML = ended.length
      ? `<ul class="recent">${ended
          .slice(0, 20)
          .map(
            (r) =>
              `<li class="${esc(r.state)}"><span class="badge ${esc(r.state)}">${esc(r.state)}</span> <a href="/thopters/${esc(r.id)}">${esc(r.issue.title)}</a> · ${esc(r.repository)} · ${ago(r.endedAt, now)} ago${r.endReason ? ` · ${esc(r.endReason)}` : ''}</li>`,
          )
          .join('')}</ul>`
      : '<p class="empty">No thopter has ended yet.</p>';
    if (summary) {
      const { intake } = summary;
      const failing = Object.entries(summary.github).filter(([, h]) => h && !h.ok);
      $('intake').innerHTML = `<p>${
        intake.paused
          ? `<strong class="warn">Paused</strong> since ${ago(intake.since, now)} ago: new launches are refused. <button type="button" data-action="resume">Resume</button>`
          : `Accepting launches. <button type="button" data-action="pause">Pause</button>`
      }</p><p>Watching ${summary.repositories.length ? summary.repositories.map(esc).join(', ') : 'no repository'}.</p>${failing
        .map(([repo, h]) => `<p class="error">${esc(repo)}: ${esc(h?.error)}</p>`)
        .join('')}`;
    }
  };

  let scheduled = false;
  const schedule = () => {
    if (scheduled) return;
    scheduled = true;
    requestAnimationFrame(() => {
      scheduled = false;
      render();
    });
  };
  const events = new EventSource('/dashboard/events');
  events.addEventListener('snapshot', (e) => {
    const data = JSON.parse((e as MessageEvent<string>).data) as { thopters: Row[]; summary: Summary };
    rows.clear();
    for (const r of data.thopters) rows.set(r.id, r);
    summary = data.summary;
    schedule();
  });
  events.addEventListener('thopters', (e) => {
    const data = JSON.parse((e as MessageEvent<string>).data) as { thopters: Row[]; removed: string[] };
    for (const r of data.thopters) rows.set(r.id, r);
    for (const id of data.removed) rows.delete(id);
    schedule();
  });
  events.addEventListener('summary', (e) => {
    summary = JSON.parse((e as MessageEvent<string>).data) as Summary;
    for (const r of rows.values())
      if (r.state === 'queued') r.queuePosition = summary.queue[r.id] ?? r.queuePosition;
    schedule();
  });
  document.addEventListener('summary-stale', () => {
    void fetch('/dashboard/summary', { credentials: 'same-origin' })
      .then((res) => (res.ok ? (res.json() as Promise<Summary>) : undefined))
      .then((fresh) => {
        if (fresh) summary = fresh;
        schedule();
      });
  });
  events.onopen = () => ($('connection').hidden = true);
  events.onerror = () => ($('connection').hidden = false);
  setInterval(schedule, 10_000);
}

// --- A thopter's page: redrawn when its record changes --------------------------------------------

function thopterPage() {
  const holder = document.querySelector<HTMLElement>('[data-thopter]')!;
  const id = holder.dataset.thopter!;
  let inFlight = false;
  let again = false;
  const refresh = async () => {
    if (inFlight) return void (again = true);
    inFlight = true;
    try {
      const res = await fetch(`/thopters/${encodeURIComponent(id)}?fragment=1`, {
        credentials: 'same-origin',
      });
      if (res.ok) holder.innerHTML = await res.text();
    } finally {
      inFlight = false;
      if (again) {
        again = false;
        void refresh();
      }
    }
  };
  const events = new EventSource('/dashboard/events');
  events.addEventListener('thopters', (e) => {
    const data = JSON.parse((e as MessageEvent<string>).data) as { thopters: Row[] };
    if (data.thopters.some((r) => r.id === id)) void refresh();
  });
}

// --- The web terminal ----------------------------------------------------------------------------

function terminalPage() {
  const el = document.getElementById('terminal')!;
  const status = document.getElementById('term-status')!;
  const readOnly = el.dataset.mode === 'view';
  const term = new Terminal({
    cursorBlink: !readOnly,
    disableStdin: readOnly,
    fontSize: 14,
    scrollback: 5000,
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(el);
  const url = new URL(`/thopters/${encodeURIComponent(el.dataset.thopter!)}/terminal/ws`, location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  if (readOnly) url.search = '?mode=view';
  const ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  const send = (msg: object) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(msg));
  const resize = () => {
    if (readOnly) return;
    fit.fit();
    send({ type: 'resize', cols: term.cols, rows: term.rows });
  };
  ws.onmessage = (e) => {
    if (typeof e.data !== 'string') return term.write(new Uint8Array(e.data as ArrayBuffer));
    const msg = JSON.parse(e.data) as {
      type: string;
      cols?: number;
      rows?: number;
      reason?: string;
      message?: string;
    };
    if (msg.type === 'ready') {
      status.textContent = readOnly ? 'watching' : 'connected';
      el.dataset.connected = 'true';
      if (readOnly && msg.cols && msg.rows) term.resize(msg.cols, msg.rows);
      else resize();
      term.focus();
    } else if (msg.type === 'size' && msg.cols && msg.rows) {
      // The window's size, which a small screen does not change: scroll to see all of it.
      term.resize(msg.cols, msg.rows);
      el.dataset.size = `${msg.cols}x${msg.rows}`;
    } else if (msg.type === 'exit') {
      status.textContent = `ended: ${msg.reason ?? ''}`;
    } else if (msg.type === 'error') {
      status.textContent = msg.message ?? 'error';
    }
  };
  ws.onclose = () => {
    el.dataset.connected = 'false';
    if (!status.textContent?.startsWith('ended'))
      status.textContent = 'disconnected: reload to connect again';
  };
  term.onData((data) => {
    if (!readOnly) send({ type: 'input', data });
  });
  window.addEventListener('resize', resize);
  // For tests and curious people: what the terminal shows, as text.
  (window as unknown as { terminalText: () => string }).terminalText = () => {
    const buffer = term.buffer.active;
    const lines: string[] = [];
    for (let i = 0; i < buffer.length; i++) lines.push(buffer.getLine(i)?.translateToString(true) ?? '');
    return lines.join('\n');
  };
}

// --- The session log: fetched again while it grows ----------------------------------------------------

function logPage() {
  const holder = document.getElementById('transcript')!;
  let tag = '';
  setInterval(async () => {
    if (document.hidden) return;
    const res = await fetch(`${location.pathname}?fragment=1`, {
      credentials: 'same-origin',
      headers: tag ? { 'if-none-match': tag } : {},
    });
    if (res.status !== 200) return;
    tag = res.headers.get('etag') ?? '';
    const atBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 40;
    holder.innerHTML = await res.text();
    if (atBottom) window.scrollTo(0, document.body.scrollHeight);
  }, 3000);
}

const pages: Record<string, () => void> = {
  main: mainPage,
  thopter: thopterPage,
  terminal: terminalPage,
  log: logPage,
};
pages[document.body.dataset.page ?? '']?.();
