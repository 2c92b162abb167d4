import { html, type Html } from './html.js';

/** A block longer than this is cut, saying how much was left out. */
const MAX_BLOCK_CHARS = 20_000;

interface Block {
  type?: string;
  text?: string;
  thinking?: string;
  name?: string;
  id?: string;
  input?: unknown;
  content?: unknown;
  is_error?: boolean;
  tool_use_id?: string;
}

interface Entry {
  type?: string;
  timestamp?: string;
  isMeta?: boolean;
  isSidechain?: boolean;
  summary?: string;
  message?: { role?: string; model?: string; content?: string | Block[] };
}

function cut(text: string): string {
  return text.length > MAX_BLOCK_CHARS
    ? `${text.slice(0, MAX_BLOCK_CHARS)}\n… (${text.length - MAX_BLOCK_CHARS} more characters)`
    : text;
}

const pretty = (value: unknown) => cut(typeof value === 'string' ? value : JSON.stringify(value, null, 2));

function time(ts: string | undefined): Html {
  if (!ts || Number.isNaN(Date.parse(ts))) return html``;
  return html`<time datetime="${ts}">${ts.replace('T', ' ').replace(/\.\d+Z$|Z$/, ' UTC')}</time>`;
}

/** What a tool was asked, in a few words: the command, the file or the pattern. */
function toolGist(input: unknown): string {
  if (!input || typeof input !== 'object') return '';
  const i = input as Record<string, unknown>;
  const gist = i.command ?? i.file_path ?? i.path ?? i.pattern ?? i.url ?? i.description ?? i.prompt;
  return typeof gist === 'string' ? gist.split('\n')[0]!.slice(0, 120) : '';
}

function resultText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((c: Block) =>
        c?.type === 'text' ? (c.text ?? '') : c?.type === 'image' ? '[image]' : JSON.stringify(c),
      )
      .join('\n');
  }
  return JSON.stringify(content, null, 2);
}

function block(b: Block): Html {
  switch (b?.type) {
    case 'text':
      return html`<div class="text">${cut(b.text ?? '')}</div>`;
    case 'thinking':
      return html`<details class="thinking">
        <summary>thinking</summary>
        <pre>${cut(b.thinking ?? '')}</pre>
      </details>`;
    case 'tool_use':
      return html`<details class="tool">
        <summary><span class="tag">tool</span> ${b.name ?? 'tool'} <code>${toolGist(b.input)}</code></summary>
        <pre>${pretty(b.input)}</pre>
      </details>`;
    case 'tool_result':
      return html`<details class="${b.is_error ? 'result error' : 'result'}">
        <summary>${b.is_error ? '✗ tool error' : '↳ tool result'}</summary>
        <pre>${cut(resultText(b.content))}</pre>
      </details>`;
    default:
      return raw(b?.type ?? 'block', b);
  }
}

function raw(label: string, value: unknown): Html {
  return html`<details class="raw">
    <summary>${label} (shown as recorded)</summary>
    <pre>${pretty(value)}</pre>
  </details>`;
}

/** One JSONL record as HTML. Record types it does not know are shown raw, never an error. */
export function renderEntry(line: string): Html {
  let entry: Entry;
  try {
    entry = JSON.parse(line) as Entry;
  } catch {
    return html`<article class="entry raw">${raw('unreadable line', line)}</article>`;
  }
  if (!entry || typeof entry !== 'object')
    return html`<article class="entry">${raw('value', entry)}</article>`;
  const when = time(entry.timestamp);
  if (entry.type === 'summary') {
    return html`<article class="entry summary"><strong>Summary:</strong> ${entry.summary ?? ''}</article>`;
  }
  if ((entry.type === 'user' || entry.type === 'assistant') && entry.message) {
    const content = entry.message.content;
    const onlyResults =
      Array.isArray(content) && content.length > 0 && content.every((b) => b?.type === 'tool_result');
    const who =
      entry.type === 'assistant' ? 'Claude' : onlyResults ? 'Tool' : entry.isMeta ? 'System' : 'User';
    const body =
      typeof content === 'string'
        ? html`<div class="text">${cut(content)}</div>`
        : Array.isArray(content)
          ? content.map(block)
          : raw('message', entry.message);
    const cls = `entry ${who.toLowerCase()}${entry.isSidechain ? ' sidechain' : ''}`;
    return html`<article class="${cls}">
      <header><span class="who">${who}</span>${when}</header>
      ${body}
    </article>`;
  }
  return html`<article class="entry other">
    <header><span class="who">${entry.type ?? 'record'}</span>${when}</header>
    ${raw(entry.type ?? 'record', entry)}
  </article>`;
}

/** A whole transcript (JSONL text) as HTML: one article per record, blank lines skipped. */
export function renderTranscript(jsonl: string): Html {
  const lines = jsonl.split('\n').filter((l) => l.trim() !== '');
  if (lines.length === 0) return html`<p class="empty">The transcript is empty so far.</p>`;
  return html`${lines.map(renderEntry)}`;
}
