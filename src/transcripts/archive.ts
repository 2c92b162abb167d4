import { gunzipSync, gzipSync } from 'node:zlib';
import type { Redis } from 'ioredis';
import type { TranscriptText } from './machine.js';

/**
 * The agent's transcripts, kept in Redis when its machine goes: the session log of a thopter that
 * ended still opens, on any hub. Gzipped (a transcript is JSON lines, which shrink about tenfold);
 * each is at most the tail the session log would show of it (MAX_TRANSCRIPT_BYTES).
 */
export class TranscriptArchive {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private key = (thopterId: string) => `${this.prefix}:record:${thopterId}:transcripts`;

  /** Replaces what was kept for the thopter: a teardown that runs again keeps the later copy. */
  async keep(thopterId: string, texts: TranscriptText[]): Promise<void> {
    const key = this.key(thopterId);
    const m = this.redis.multi().del(key);
    for (const [i, t] of texts.entries()) {
      const value = gzipSync(JSON.stringify(t));
      // Field names keep the sessions in their order, oldest first.
      m.hset(key, `${String(i).padStart(4, '0')}:${t.session}`, value);
    }
    await m.exec();
  }

  /** What was kept, oldest session first; empty when nothing was. */
  async load(thopterId: string): Promise<TranscriptText[]> {
    const all = await this.redis.hgetallBuffer(this.key(thopterId));
    return Object.keys(all)
      .sort()
      .map((field) => JSON.parse(gunzipSync(all[field]!).toString('utf8')) as TranscriptText);
  }
}
