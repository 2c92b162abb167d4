import { createHash } from 'node:crypto';
import path from 'node:path';
import type { Transport } from '../providers/types.js';
import { html, type Html } from './html.js';
import { renderTranscript } from './transcript.js';

/** The tail of a transcript larger than this is shown; its start is left out, and the page says so. */
const MAX_FILE_BYTES = 4 * 1024 * 1024;

interface TranscriptFile {
  path: string;
  size: number;
  mtime: number;
}

/** Claude Code's transcripts on the machine: `~/.claude/projects/<project>/<session>.jsonl`, oldest first. */
export async function transcriptFiles(t: Transport): Promise<TranscriptFile[]> {
  const dir = path.posix.join(t.paths.home, '.claude', 'projects');
  if (!(await t.exists(dir))) return [];
  const found = await t.exec(
    ['find', dir, '-maxdepth', '2', '-type', 'f', '-name', '*.jsonl', '-printf', '%T@ %s %p\\n'],
    { timeoutMs: 15_000 },
  );
  if (found.exitCode !== 0) throw new Error(`the transcripts could not be listed: ${found.stderr.trim()}`);
  return found.stdout
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const [mtime, size, ...rest] = line.split(' ');
      return { path: rest.join(' '), size: Number(size), mtime: Number(mtime) };
    })
    .sort((a, b) => a.mtime - b.mtime);
}

/** A tag for what the transcripts are now: the page asks again with it and gets 304 while they stand still. */
export function transcriptTag(files: TranscriptFile[]): string {
  const h = createHash('sha256');
  for (const f of files) h.update(`${f.path}\0${f.size}\0${f.mtime}\n`);
  return `"${h.digest('hex').slice(0, 32)}"`;
}

/** Every transcript of the thopter as HTML, newest session last. */
export async function renderSessionLog(t: Transport, files: TranscriptFile[]): Promise<Html> {
  if (files.length === 0) {
    return html`<p class="empty">
      No transcript yet: Claude Code writes one under <code>~/.claude/projects/</code> once the agent starts
      working. This page refreshes by itself.
    </p>`;
  }
  const parts: Html[] = [];
  for (const f of files) {
    let text: string;
    let cutNote = html``;
    if (f.size > MAX_FILE_BYTES) {
      const tail = await t.exec(['tail', '-c', String(MAX_FILE_BYTES), f.path], { timeoutMs: 30_000 });
      text = tail.stdout.slice(tail.stdout.indexOf('\n') + 1);
      cutNote = html`<p class="note">
        The first ${Math.round((f.size - MAX_FILE_BYTES) / 1024)} kB of this transcript are not shown.
      </p>`;
    } else {
      text = (await t.readFile(f.path)).toString('utf8');
    }
    parts.push(
      html`<section class="session">
        <h2>${path.posix.basename(f.path, '.jsonl')}</h2>
        ${cutNote}${renderTranscript(text)}
      </section>`,
    );
  }
  return html`${parts}`;
}
