import { createHash } from 'node:crypto';
import type { TranscriptFile, TranscriptText } from '../transcripts/machine.js';
import { html, type Html } from './html.js';
import { renderTranscript } from './transcript.js';

/** A tag for what the transcripts are now: the page asks again with it and gets 304 while they stand still. */
export function transcriptTag(files: TranscriptFile[]): string {
  const h = createHash('sha256');
  for (const f of files) h.update(`${f.path}\0${f.size}\0${f.mtime}\n`);
  return `"${h.digest('hex').slice(0, 32)}"`;
}

/** Every transcript of the thopter as HTML, newest session last. */
export function renderSessionLog(texts: TranscriptText[]): Html {
  if (texts.length === 0) {
    return html`<p class="empty">
      No transcript yet: Claude Code writes one under <code>~/.claude/projects/</code> once the agent starts
      working. This page refreshes by itself.
    </p>`;
  }
  return html`${texts.map(
    (t) =>
      html`<section class="session">
        <h2>${t.session}</h2>
        ${
          t.cutBytes > 0
            ? html`<p class="note">
                The first ${Math.round(t.cutBytes / 1024)} kB of this transcript are not shown.
              </p>`
            : ''
        }${renderTranscript(t.text)}
      </section>`,
  )}`;
}
