import { formatUsd, describeUsage } from '../usage/format.js';
import { TOKEN_KINDS, type TokenCounts, type Usage } from '../usage/tokens.js';
import type { UsageGroup, UsageSummary } from '../usage/totals.js';
import { html, type Html } from './html.js';

const KIND_NAMES = {
  input: 'input',
  output: 'output',
  cacheRead: 'cache read',
  cacheCreation: 'cache write',
};
const cost = (usd: number | null) => (usd === null ? 'cost unknown' : formatUsd(usd));
const count = (n: number) => n.toLocaleString('en-US');
const kindCells = (t: TokenCounts) => TOKEN_KINDS.map((k) => html`<td class="num">${count(t[k])}</td>`);
const kindHeads = TOKEN_KINDS.map((k) => html`<th scope="col" class="num">${KIND_NAMES[k]}</th>`);

/** A thopter's usage on its page: the sentence of its report, then exact counts by model. */
export function usageFacts(usage: Usage): Html {
  return html`<dt>Usage</dt>
    <dd class="usage">
      ${describeUsage(usage)}
      <table class="usage-table">
        <thead>
          <tr>
            <th scope="col">model</th>
            ${kindHeads}
            <th scope="col" class="num">messages</th>
            <th scope="col" class="num">cost</th>
          </tr>
        </thead>
        <tbody>
          ${Object.entries(usage.byModel).map(
            ([model, m]) =>
              html`<tr data-model="${model}">
                <th scope="row">${model}</th>
                ${kindCells(m.tokens)}
                <td class="num">${count(m.messages)}</td>
                <td class="num">${cost(m.costUsd)}</td>
              </tr>`,
          )}
        </tbody>
      </table>
    </dd>`;
}

function groupTable(label: string, groups: Record<string, UsageGroup>): Html {
  const names = Object.keys(groups).sort();
  if (names.length === 0) return html`<p class="empty">No usage.</p>`;
  return html`<table class="usage-table">
    <thead>
      <tr>
        <th scope="col">${label}</th>
        ${kindHeads}
        <th scope="col" class="num">cost</th>
        <th scope="col">models</th>
      </tr>
    </thead>
    <tbody>
      ${names.map((name) => {
        const g = groups[name]!;
        return html`<tr data-name="${name}">
          <th scope="row">${name}</th>
          ${kindCells(g.tokens)}
          <td class="num">${cost(g.costUsd)}</td>
          <td>${g.models.join(', ')}</td>
        </tr>`;
      })}
    </tbody>
  </table>`;
}

/** The usage page's body: today's and this month's totals (UTC), by repository and by person. */
export function usageSection(summary: UsageSummary): Html {
  const period = (id: string, title: string, p: UsageSummary['today']) =>
    html`<section aria-labelledby="h-${id}" id="usage-${id}">
      <h2 id="h-${id}">${title}: ${cost(p.total.costUsd)}</h2>
      <h3>By repository</h3>
      ${groupTable('repository', p.byRepository)}
      <h3>By person</h3>
      ${groupTable('person', p.byPerson)}
    </section>`;
  return html`<h1>Usage</h1>
    <p class="note">
      Tokens and estimated cost from the agents' transcripts, priced with THOPTER_PRICES (or Claude Code's own
      prices); days and months are UTC. The same figures: <code>GET /api/usage</code>.
    </p>
    ${period('today', `Today (${summary.day})`, summary.today)}
    ${period('month', `This month (${summary.month})`, summary.thisMonth)}`;
}
