/**
 * Polls `check` until it returns a value other than undefined/false, or fails after `timeoutMs`
 * saying what it was waiting for. Tests wait for conditions, never for a fixed time.
 */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false> | T | undefined | false,
  {
    timeoutMs = 60_000,
    intervalMs = 100,
    explain,
  }: {
    timeoutMs?: number;
    intervalMs?: number;
    /** What to add to the timeout's message, to see why it never came (records, logs). */
    explain?: () => Promise<string> | string;
  } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      let why = '';
      if (explain) why = `\n${await Promise.resolve(explain()).catch((err) => `(explain failed: ${err})`)}`;
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}${why}`,
      );
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * Usage is counted per UTC day (and month). A test that spends and then reads "today" back waits
 * out a midnight due within `ms` first, so both happen on one day.
 */
export async function clearOfUtcMidnight(ms: number): Promise<void> {
  const now = new Date();
  const midnight = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
  if (midnight - now.getTime() > ms) return;
  await waitFor('the next UTC day', () => Date.now() >= midnight, {
    timeoutMs: ms + 60_000,
    intervalMs: 1000,
  });
}
