/**
 * An error that carries its own decision: a stable code for callers and logs, and whether trying
 * again can help. Processors turn non-retryable ones into BullMQ's UnrecoverableError.
 */
export type ErrorCode =
  | 'bad-input'
  | 'not-found'
  | 'destroy-requested'
  | 'machine'
  | 'transport'
  | 'phase'
  | 'timeout'
  /** A launch past a daily budget (scanner/budget.ts). */
  | 'over-budget'
  /** A continuation of a work branch another live thopter carries on (thopters/store.ts). */
  | 'conflict';

export class ThopterError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly retryable = false,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ThopterError';
  }
}

export function isRetryable(err: unknown): boolean {
  // Unknown errors (a dropped connection, a full disk) are worth another attempt.
  return err instanceof ThopterError ? err.retryable : true;
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Thrown by abortable waits; `reason` is what the AbortSignal carried (e.g. 'handoff'). */
export class AbortedError extends Error {
  constructor(readonly reason: unknown) {
    super(`aborted: ${String(reason)}`);
    this.name = 'AbortedError';
  }
}

/** Resolves after `ms`, or rejects with AbortedError as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new AbortedError(signal.reason));
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(new AbortedError(signal?.reason));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
