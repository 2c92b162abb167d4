import { BOARD_PATH } from '../api/board.js';
import { thopterView } from '../api/views.js';
import {
  describeSave,
  type BranchCompare,
  type ThopterEvent,
  type ThopterRecord,
} from '../thopters/record.js';
import { html, type Html } from './html.js';
import { branchUrl, conditionOf, linkable } from './rows.js';
import { usageFacts, usageSection } from './usage.js';
import type { UsageSummary } from '../usage/totals.js';

interface PageOptions {
  title: string;
  page: string;
  csrf?: string;
  /** Pages that fill the screen (the terminal) leave out the header. */
  bare?: boolean;
}

/** The frame of every dashboard page: the header, the stylesheet and the one script. */
export function layout(opts: PageOptions, body: Html): string {
  const header = opts.bare
    ? html``
    : html`<header class="top">
        <a class="brand" href="/">Thopter Swarm</a>
        <nav>
          <a href="/">Thopters</a>
          <a href="${BOARD_PATH}">Queues</a>
          <a href="/usage">Usage</a>
          ${opts.csrf ? html`<button type="button" class="link" data-action="sign-out">Sign out</button>` : ''}
        </nav>
      </header>`;
  return html`<!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        ${opts.csrf ? html`<meta name="csrf-token" content="${opts.csrf}" />` : ''}
        <title>${opts.title} · Thopter Swarm</title>
        <link rel="stylesheet" href="/assets/dashboard.css" />
        ${opts.page === 'terminal' ? html`<link rel="stylesheet" href="/assets/xterm.css" />` : ''}
        <script type="module" src="/assets/dashboard.js"></script>
      </head>
      <body data-page="${opts.page}">
        ${header}
        <main>${body}</main>
      </body>
    </html>`.value;
}

export function loginPage(next: string, error?: string): string {
  return layout(
    { title: 'Sign in', page: 'login' },
    html`<section class="login">
      <h1>Sign in</h1>
      <p>
        Use the hub's token (HUB_API_TOKEN; the hub printed it at its first start and keeps it in
        <code>DATA_DIR/hub-api-token</code>).
      </p>
      ${error ? html`<p class="error" role="alert">${error}</p>` : ''}
      <form method="post" action="/login">
        <input type="hidden" name="next" value="${next}" />
        <label
          >Token <input type="password" name="token" autocomplete="current-password" required autofocus
        /></label>
        <button type="submit">Sign in</button>
      </form>
    </section>`,
  );
}

export function mainPage(csrf: string, repositories: string[]): string {
  const hint = repositories.length
    ? html`No thopters yet: write <code>/thopter</code> in an issue of
        ${repositories.map((r, i) => html`${i ? ', ' : ''}<strong>${r}</strong>`)}, or launch one with
        <code>POST /api/thopters</code>.`
    : html`No thopters yet: launch one with <code>POST /api/thopters</code>, or set GITHUB_INTEGRATION_JSON to
        watch repositories for <code>/thopter</code>.`;
  return layout(
    { title: 'Thopters', page: 'main', csrf },
    html`<p id="connection" class="connection" hidden>Reconnecting…</p>
      <section aria-labelledby="h-thopters">
        <h2 id="h-thopters">Thopters <span id="count" class="count"></span></h2>
        <div id="thopters"><p class="empty">${hint}</p></div>
        <template id="empty-hint"><p class="empty">${hint}</p></template>
      </section>
      <section aria-labelledby="h-queue">
        <h2 id="h-queue">Queue</h2>
        <div id="queue"></div>
      </section>
      <section aria-labelledby="h-golden">
        <h2 id="h-golden">Golden claudes</h2>
        <div id="golden"></div>
      </section>
      <section aria-labelledby="h-recent">
        <h2 id="h-recent">Recently ended</h2>
        <div id="recent"></div>
      </section>
      <section aria-labelledby="h-intake">
        <h2 id="h-intake">Intake</h2>
        <div id="intake"></div>
      </section>`,
  );
}

const duration = (ms: number | null) =>
  ms === null
    ? ''
    : ms < 1000
      ? `${ms} ms`
      : ms < 60_000
        ? `${(ms / 1000).toFixed(1)} s`
        : `${Math.round(ms / 60_000)} min`;

/** Everything on a thopter's record: the part of its page that is redrawn when it changes. */
export function thopterDetail(r: ThopterRecord, events: ThopterEvent[], queuePosition: number | null): Html {
  const v = thopterView(r, { queuePosition, events });
  const cond = conditionOf(r);
  const branch = branchUrl(r.request.issue.url, v.workBranch ?? undefined);
  const issueUrl = linkable(r.request.issue.url);
  const live = r.state === 'running' || r.state === 'kept';
  return html`<div id="detail" data-state="${r.state}">
    <h1><span class="badge ${cond}">${cond === 'kept' ? 'failed, kept' : cond}</span> ${v.issue.title}</h1>
    <dl class="facts">
      <dt>Thopter</dt>
      <dd><code>${v.id}</code></dd>
      <dt>Repository</dt>
      <dd>
        ${v.repository}${
          v.issue.number !== null
            ? html` ·
              ${issueUrl ? html`<a href="${issueUrl}">#${v.issue.number}</a>` : html`#${v.issue.number}`}`
            : ''
        }
      </dd>
      <dt>Requested by</dt>
      <dd>
        ${v.requestedBy} (${v.source}${v.prompt !== 'default' ? `, prompt ${v.prompt}` : ''}, golden claude
        ${v.gc})
      </dd>
      ${
        v.workBranch
          ? html`<dt>Work branch</dt>
              <dd>${branch ? html`<a href="${branch}">${v.workBranch}</a>` : v.workBranch}</dd>`
          : ''
      }
      ${
        v.continues
          ? html`<dt>Continues</dt>
              <dd>
                <a href="/thopters/${v.continues.thopterId}">${v.continues.thopterId}</a> on its branch
              </dd>`
          : ''
      }
      ${
        v.machine
          ? html`<dt>Machine</dt>
              <dd>
                <code>${v.machine.id}</code>
                (${v.machine.provider}${v.machine.name ? `, ${v.machine.name}` : ''})
              </dd>`
          : ''
      }
      ${
        v.queuePosition
          ? html`<dt>Place in line</dt>
              <dd>${v.queuePosition}</dd>`
          : ''
      }
      ${
        v.session && ['destroyed', 'failed', 'stopping'].includes(r.state)
          ? html`<dt>Last session</dt>
              <dd>
                seen ${v.session.state} at
                <time datetime="${v.session.updatedAt}">${v.session.updatedAt}</time>, last activity
                <time datetime="${v.session.lastActivity}">${v.session.lastActivity}</time>; the machine is
                ${r.state === 'stopping' ? 'going away' : 'gone'}
              </dd>`
          : v.session
            ? html`<dt>Session</dt>
                <dd>
                  ${v.session.state}, agent ${v.session.agentRunning ? 'running' : 'not running'}, last
                  activity
                  <time datetime="${v.session.lastActivity}">${v.session.lastActivity}</time
                  >${v.session.idleSince ? html`, idle since <time datetime="${v.session.idleSince}">${v.session.idleSince}</time>` : ''}${v.session.silentSince ? html`; its observer has been silent since <time datetime="${v.session.silentSince}">${v.session.silentSince}</time>, so the hub looks at the session itself` : ''}
                </dd>`
            : ''
      }
      ${
        v.stalledSince
          ? html`<dt>Stalled</dt>
              <dd>
                mid-turn with no progress since
                <time datetime="${v.stalledSince}">${v.stalledSince}</time> (its transcript and screen have
                not changed): a hung tool call or model request looks like this
              </dd>`
          : ''
      }
      ${
        r.turns
          ? html`<dt>Turns</dt>
              <dd>
                ${r.turns.count} ended, the last at
                <time datetime="${r.turns.lastEndedAt}">${r.turns.lastEndedAt}</time>
              </dd>`
          : ''
      }
      ${r.usage ? usageFacts(r.usage) : ''}
      ${
        r.kept && r.state === 'kept'
          ? html`<dt>Failure</dt>
              <dd>
                ${r.kept.reason}. The machine is kept for a look until
                <time datetime="${r.kept.until}">${r.kept.until}</time> (THOPTER_KEEP_FAILED): open its
                terminal, and kill it when done.
              </dd>`
          : ''
      }
      ${
        r.pullRequest
          ? html`<dt>Pull request</dt>
              <dd>
                ${linkable(r.pullRequest.url) ? html`<a href="${r.pullRequest.url}">#${r.pullRequest.number}</a>` : `#${r.pullRequest.number}`}${r.pullRequest.draft ? ' (draft)' : ''}${r.compare ? `: ${figures(r.compare)}` : ''}
              </dd>`
          : ''
      }
      ${
        v.endReason
          ? html`<dt>${r.state === 'failed' ? 'Failure' : 'Ended'}</dt>
              <dd>${v.endReason}</dd>`
          : ''
      }
      ${
        r.saved && r.machine
          ? html`<dt>Work saved</dt>
              <dd class="saved">${describeSave(r.saved, r.machine.workBranch)}</dd>`
          : ''
      }
      ${
        r.finish?.lastMessage
          ? html`<dt>Its last message</dt>
              <dd><blockquote class="last-message">${r.finish.lastMessage.text}</blockquote></dd>`
          : ''
      }
      ${
        r.lastReport
          ? html`<dt>Last report</dt>
              <dd>
                ${
                  linkable(r.lastReport.url)
                    ? html`<a href="${r.lastReport.url}">on the issue</a>`
                    : 'on the issue'
                }
                (${r.lastReport.key}),
                <time datetime="${r.lastReport.at}">${r.lastReport.at}</time>
              </dd>`
          : ''
      }
    </dl>
    <p class="actions">
      ${live ? html`<a class="button" href="/thopters/${v.id}/terminal">Terminal</a> <a class="button" href="/thopters/${v.id}/terminal?mode=view">Watch (read-only)</a>` : ''}
      <a class="button" href="/thopters/${v.id}/log">Session log</a>
      ${!['destroyed', 'failed', 'stopping'].includes(r.state) ? html`<button type="button" class="danger" data-action="kill" data-id="${v.id}">Kill</button>` : ''}
    </p>
    <h2>Phases</h2>
    <ol class="phases">
      ${v.phases.map(
        (p) =>
          html`<li class="phase ${p.outcome}">
            <span class="name">${p.name}</span>
            <span class="outcome">${p.outcome}${p.attempts > 1 ? ` (attempt ${p.attempts})` : ''}</span>
            <span class="took">${duration(p.durationMs)}</span>
            ${p.summary ? html`<div class="summary">${p.summary}</div>` : ''}
            ${p.error ? html`<div class="error">${p.error}</div>` : ''}
          </li>`,
      )}
    </ol>
    <h2>Screen</h2>
    ${v.session?.screen?.trim() ? html`<pre class="screen">${v.session.screen.replace(/\s+$/, '')}</pre>` : html`<p class="empty">No screen yet: it appears once the agent's session runs.</p>`}
    ${
      r.told?.length
        ? html`<h2>Told</h2>
            <ol class="told">
              ${r.told.map(
                (m) =>
                  html`<li class="told ${m.state}">
                    <div class="meta">
                      ${m.from ? `@${m.from}` : 'the hub'} ·
                      <time datetime="${m.at}">${m.at}</time> · ${m.state}${m.reason ? `: ${m.reason}` : ''}
                    </div>
                    <pre>${m.text}</pre>
                  </li>`,
              )}
            </ol>`
        : ''
    }
    <h2>GitHub context</h2>
    ${v.issue.number === null && !r.request.issue.body ? html`<p class="empty">Launched through the API without an issue.</p>` : ''}
    ${r.request.issue.body.trim() ? html`<div class="issue-body"><pre>${r.request.issue.body}</pre></div>` : ''}
    ${r.request.issue.comments.map(
      (c) =>
        html`<div class="comment">
          <div class="meta">${c.author} · <time datetime="${c.createdAt}">${c.createdAt}</time></div>
          <pre>${c.body}</pre>
        </div>`,
    )}
    <h2>Events</h2>
    <ol class="events">
      ${events.map((e) => html`<li><time datetime="${e.at}">${e.at}</time> <strong>${e.type}</strong> ${e.message}</li>`)}
    </ol>
  </div>`;
}

export function thopterPage(csrf: string, r: ThopterRecord, detail: Html): string {
  return layout(
    { title: r.request.issue.title, page: 'thopter', csrf },
    html`<div data-thopter="${r.id}">${detail}</div>`,
  );
}

export function terminalPage(csrf: string, r: ThopterRecord, readOnly: boolean): string {
  const other = readOnly ? html`<a href="?">Type in it</a>` : html`<a href="?mode=view">Read-only</a>`;
  return layout(
    { title: `Terminal · ${r.request.issue.title}`, page: 'terminal', csrf, bare: true },
    html`<div class="term-bar">
        <a href="/thopters/${r.id}"
          >←
          ${r.request.repository}${r.request.issue.number !== undefined ? ` #${r.request.issue.number}` : ''}</a
        >
        <span id="term-status">connecting…</span
        ><span class="mode">${readOnly ? 'read-only' : 'typing goes to the agent'}</span> ${other}
      </div>
      <div id="terminal" data-thopter="${r.id}" data-mode="${readOnly ? 'view' : 'type'}"></div>`,
  );
}

export function logPage(csrf: string, r: ThopterRecord, transcript: Html): string {
  return layout(
    { title: `Session log · ${r.request.issue.title}`, page: 'log', csrf },
    html`<p><a href="/thopters/${r.id}">← ${r.request.issue.title}</a></p>
      <h1>Session log</h1>
      <div id="transcript" data-thopter="${r.id}">${transcript}</div>`,
  );
}

/** Shown instead of any dashboard page while the hub cannot reach Redis. */
export function usagePage(csrf: string, summary: UsageSummary): string {
  return layout({ title: 'Usage', page: 'usage', csrf }, usageSection(summary));
}

export function redisDownPage(problem: string): string {
  return layout(
    { title: 'Redis is unreachable', page: 'redis-down' },
    html`<section class="login">
      <h1>Redis is unreachable</h1>
      <p class="error" role="alert">${problem}.</p>
      <p>
        The hub keeps its thopters, queues and sign-ins in Redis, so nothing can be shown or changed until it
        answers again. Running thopters carry on. Reload this page in a few seconds.
      </p>
    </section>`,
  );
}

/** A work branch's figures against the default branch, as the pull request's line shows them. */
function figures(c: BranchCompare): string {
  const n = (count: number, what: string) => `${count} ${what}${count === 1 ? '' : 's'}`;
  return `${n(c.aheadBy, 'commit')} ahead of ${c.base}, ${n(c.filesChanged, 'file')} changed, +${c.additions} −${c.deletions}`;
}
