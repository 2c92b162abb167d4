import { spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';

export interface RunOptions {
  /** The whole environment: nothing is inherited from the hub. */
  env: Record<string, string>;
  cwd?: string;
  input?: string | Buffer | Readable;
  /** Streams stdout here instead of collecting it. */
  stdout?: Writable;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface RunResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

const MAX_COLLECTED = 4 * 1024 * 1024;

/**
 * Runs a program with an argv array (no shell) and collects its output. Node's own spawn, not
 * execa: the local provider starts a dozen processes per thopter, and execa costs about twice the
 * CPU per process (see docs/benchmarks.md), which is what limits concurrent launches.
 */
export function run(file: string, args: string[], opts: RunOptions): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const streamIn =
      opts.input !== undefined && typeof opts.input !== 'string' && !Buffer.isBuffer(opts.input);
    const child = spawn(file, args, {
      cwd: opts.cwd,
      env: opts.env,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    let failure: Error | undefined;
    const stop = (err: Error) => {
      failure ??= err;
      child.kill('SIGKILL');
    };
    const timer = opts.timeoutMs
      ? setTimeout(
          () => stop(new Error(`${file} did not finish within ${opts.timeoutMs} ms`)),
          opts.timeoutMs,
        )
      : undefined;
    const onAbort = () => stop(new Error(`${file} was cancelled (${String(opts.signal?.reason)})`));
    if (opts.signal?.aborted) onAbort();
    opts.signal?.addEventListener('abort', onAbort, { once: true });

    if (opts.stdout) child.stdout!.pipe(opts.stdout);
    else
      child.stdout!.on(
        'data',
        (d: Buffer) => stdout.length < MAX_COLLECTED && (stdout += d.toString('utf8')),
      );
    child.stderr!.on('data', (d: Buffer) => stderr.length < MAX_COLLECTED && (stderr += d.toString('utf8')));
    if (child.stdin) {
      // A program that exits without reading all its input is not an error of ours.
      child.stdin.on('error', () => {});
      if (streamIn) (opts.input as Readable).pipe(child.stdin);
      else child.stdin.end(opts.input as string | Buffer);
    }
    child.once('error', (err) => stop(new Error(`${file} could not start: ${err.message}`)));
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener('abort', onAbort);
      if (failure) return reject(failure);
      resolve({ exitCode: code ?? (signal ? 128 : 1), stdout, stderr });
    });
  });
}
