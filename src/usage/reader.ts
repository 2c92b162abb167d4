import type { Dirent } from 'node:fs';
import { open, readdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { MODEL_NAME, TOKEN_KINDS, type TokenCounts, type UsageTotals } from './tokens.js';

/**
 * How many of the latest message ids keep the usage they were counted with. Claude Code writes a
 * message's content blocks on consecutive lines, each with the message's usage; a later line may
 * carry more output tokens than the first (written while the reply streamed), and only the
 * difference is added.
 */
const RECENT_MESSAGES = 64;
/** Bytes read at once; a catch-up of a large transcript goes in steps of this. */
const CHUNK_BYTES = 4 * 1024 * 1024;

/** Claude Code's placeholder for a reply it made up itself (an API error): no tokens, no model. */
const SYNTHETIC_MODEL = '<synthetic>';

const count = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) && v > 0 ? Math.floor(v) : 0);

/**
 * Counts the usage of transcript lines, each message id once, whichever file or read it comes in:
 * the transcript writes one line per content block, each repeating the message's id and its full
 * usage, so summing lines would count a message once per block.
 */
export class UsageCounter {
  private readonly totals: UsageTotals = {};
  private readonly seen = new Set<string>();
  private readonly recent = new Map<string, { model: string; tokens: TokenCounts }>();

  /** One line of a transcript (JSON); lines that are not an assistant message with usage are ignored. */
  addLine(line: string): void {
    // Most lines (tool results, user text, progress) carry no usage: skip them without parsing.
    if (!line.includes('"usage"')) return;
    let entry: unknown;
    try {
      entry = JSON.parse(line);
    } catch {
      return;
    }
    const message = (entry as { message?: unknown } | null)?.message as
      { id?: unknown; model?: unknown; usage?: Record<string, unknown> } | undefined;
    if ((entry as { type?: unknown }).type !== 'assistant' || !message) return;
    const { id, usage } = message;
    if (typeof id !== 'string' || typeof message.model !== 'string' || !usage) return;
    if (message.model === SYNTHETIC_MODEL) return;
    // Counted all the same, under a name that has no price: its cost shows as unknown.
    const model = MODEL_NAME.test(message.model) ? message.model : 'unnamed-model';
    const tokens: TokenCounts = {
      input: count(usage.input_tokens),
      output: count(usage.output_tokens),
      cacheRead: count(usage.cache_read_input_tokens),
      cacheCreation: count(usage.cache_creation_input_tokens),
    };
    const prior = this.recent.get(id);
    if (prior) {
      const t = this.totals[prior.model]!;
      for (const kind of TOKEN_KINDS) {
        if (tokens[kind] > prior.tokens[kind]) {
          t[kind] += tokens[kind] - prior.tokens[kind];
          prior.tokens[kind] = tokens[kind];
        }
      }
      return;
    }
    if (this.seen.has(id)) return;
    this.seen.add(id);
    this.recent.set(id, { model, tokens });
    if (this.recent.size > RECENT_MESSAGES) this.recent.delete(this.recent.keys().next().value!);
    const t = (this.totals[model] ??= { input: 0, output: 0, cacheRead: 0, cacheCreation: 0, messages: 0 });
    for (const kind of TOKEN_KINDS) t[kind] += tokens[kind];
    t.messages++;
  }

  /** A copy of the totals so far. */
  snapshot(): UsageTotals {
    return Object.fromEntries(Object.entries(this.totals).map(([m, t]) => [m, { ...t }]));
  }
}

/**
 * Reads the usage of every transcript under a Claude Code projects folder (`~/.claude/projects`)
 * as they grow: per file it keeps the offset of the first byte after the last whole line read, and
 * each `read()` reads only what was appended since. A line still being written is read once whole.
 * Every session file counts (a restart or `/clear` starts a new one). The hub runs one per local
 * thopter; the observer runs one inside a Fly machine and posts the totals.
 */
export class TranscriptUsageReader {
  private readonly offsets = new Map<string, number>();
  private readonly counter = new UsageCounter();

  constructor(readonly projectsDir: string) {}

  /** The usage of all transcripts as of now (cumulative), reading only the bytes not read before. */
  async read(): Promise<UsageTotals> {
    for (const file of await this.files()) {
      let size: number;
      try {
        size = (await stat(file)).size;
      } catch {
        continue; // removed between the listing and now
      }
      let offset = this.offsets.get(file) ?? 0;
      // A file that shrank was replaced: read it again; its messages already counted stay counted once.
      if (size < offset) offset = 0;
      if (size > offset) this.offsets.set(file, await this.readFrom(file, offset, size));
    }
    return this.counter.snapshot();
  }

  private async files(): Promise<string[]> {
    let projects: string[];
    try {
      projects = await readdir(this.projectsDir);
    } catch {
      return [];
    }
    const found: string[] = [];
    const entriesOf = async (dir: string): Promise<Dirent[]> => {
      try {
        return await readdir(dir, { withFileTypes: true });
      } catch {
        return []; // not a folder, or gone
      }
    };
    for (const project of projects) {
      const dir = path.join(this.projectsDir, project);
      for (const e of await entriesOf(dir)) {
        if (e.isFile() && e.name.endsWith('.jsonl')) found.push(path.join(dir, e.name));
        // Subagents (the Task tool) write their own transcripts beside the session's,
        // `<project>/<session>/subagents/agent-<id>.jsonl`: their tokens are the run's too.
        else if (e.isDirectory()) {
          const sub = path.join(dir, e.name, 'subagents');
          for (const f of await entriesOf(sub))
            if (f.isFile() && f.name.endsWith('.jsonl')) found.push(path.join(sub, f.name));
        }
      }
    }
    return found;
  }

  /** Counts the whole lines between `offset` and `size`; returns the offset after the last one. */
  private async readFrom(file: string, offset: number, size: number): Promise<number> {
    const handle = await open(file, 'r');
    try {
      let chunk = Buffer.alloc(Math.min(CHUNK_BYTES, size - offset));
      while (offset < size) {
        const want = Math.min(chunk.length, size - offset);
        const { bytesRead } = await handle.read(chunk, 0, want, offset);
        if (bytesRead === 0) break;
        const end = chunk.lastIndexOf(0x0a, bytesRead - 1);
        if (end < 0) {
          // No whole line yet: one longer than the buffer (read it with a bigger one), or a line
          // still being written at the end of the file (read it next time).
          if (offset + bytesRead >= size) break;
          chunk = Buffer.alloc(chunk.length * 2);
          continue;
        }
        // Cut at a newline, so no UTF-8 character is split.
        for (const line of chunk.toString('utf8', 0, end).split('\n')) this.counter.addLine(line);
        offset += end + 1;
      }
      return offset;
    } finally {
      await handle.close();
    }
  }
}
