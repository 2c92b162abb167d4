import type { Redis } from 'ioredis';
import { AbortedError } from '../errors.js';
import type { Logger } from '../log.js';

/**
 * Tells waiters in this process the moment a thopter's record changes on any hub: the store
 * publishes the thopter id on one channel after every write, and one subscriber connection per
 * hub fans it out. Lifecycle and destroy jobs wait on this instead of polling Redis, so a phase
 * result or a destroy request is acted on at once; their timeouts remain the safety net.
 */
export class RecordChanges {
  private readonly listeners = new Map<string, Set<() => void>>();
  private readonly anyListeners = new Set<(id: string) => void>();

  private constructor(private readonly subscriber: Redis) {}

  /**
   * `channel` carries record changes (waiters and `onAny` hear them); `sessionChannel`, when given,
   * carries session-status changes, which only `onAny` listeners (the dashboards) hear.
   */
  static async start(
    client: Redis,
    channel: string,
    log: Logger,
    sessionChannel?: string,
  ): Promise<RecordChanges> {
    const subscriber = client.duplicate();
    subscriber.on('error', (err) => log.warn({ err: err.message }, 'record-change subscriber error'));
    const changes = new RecordChanges(subscriber);
    subscriber.on('message', (from: string, id: string) => {
      if (from === channel) for (const listener of changes.listeners.get(id) ?? []) listener();
      for (const listener of changes.anyListeners) listener(id);
    });
    await subscriber.subscribe(channel, ...(sessionChannel ? [sessionChannel] : []));
    return changes;
  }

  /**
   * Calls `listener` with the id of every record whose record or session changes, until the
   * returned function is called.
   */
  onAny(listener: (id: string) => void): () => void {
    this.anyListeners.add(listener);
    return () => this.anyListeners.delete(listener);
  }

  /** Calls `listener` on every change of `id` until the returned function is called. */
  on(id: string, listener: () => void): () => void {
    let set = this.listeners.get(id);
    if (!set) this.listeners.set(id, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.listeners.delete(id);
    };
  }

  /** Resolves at the next change of `id`, or after `timeoutMs`; rejects with AbortedError on abort. */
  wait(id: string, timeoutMs: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) return reject(new AbortedError(signal.reason));
      const done = () => {
        clearTimeout(timer);
        off();
        signal?.removeEventListener('abort', onAbort);
      };
      const onAbort = () => {
        done();
        reject(new AbortedError(signal?.reason));
      };
      const timer = setTimeout(() => (done(), resolve()), timeoutMs);
      const off = this.on(id, () => (done(), resolve()));
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  async close(): Promise<void> {
    this.listeners.clear();
    this.anyListeners.clear();
    this.subscriber.disconnect();
  }
}
