import path from 'node:path';
import type { Transport } from '../providers/types.js';

/** The tail of a transcript larger than this is read; its start is left out, and readers say so. */
export const MAX_TRANSCRIPT_BYTES = 4 * 1024 * 1024;

export interface TranscriptFile {
  path: string;
  size: number;
  mtime: number;
}

/** One transcript's text: the whole file, or its last MAX_TRANSCRIPT_BYTES from a line start. */
export interface TranscriptText {
  /** The session's name: the file's name without `.jsonl`. */
  session: string;
  text: string;
  /** How many bytes at the start were left out (0: none). */
  cutBytes: number;
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

/** Reads each transcript, the tail only of one over MAX_TRANSCRIPT_BYTES. */
export async function readTranscripts(t: Transport, files: TranscriptFile[]): Promise<TranscriptText[]> {
  const texts: TranscriptText[] = [];
  for (const f of files) {
    const session = path.posix.basename(f.path, '.jsonl');
    if (f.size > MAX_TRANSCRIPT_BYTES) {
      const tail = await t.exec(['tail', '-c', String(MAX_TRANSCRIPT_BYTES), f.path], { timeoutMs: 30_000 });
      // The tail starts inside a line: drop it, so every line left is whole JSON.
      texts.push({
        session,
        text: tail.stdout.slice(tail.stdout.indexOf('\n') + 1),
        cutBytes: f.size - MAX_TRANSCRIPT_BYTES,
      });
    } else {
      texts.push({ session, text: (await t.readFile(f.path)).toString('utf8'), cutBytes: 0 });
    }
  }
  return texts;
}
