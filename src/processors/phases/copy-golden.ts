import { PassThrough } from 'node:stream';
import { ThopterError } from '../../errors.js';
import type { ExecResult } from '../../providers/types.js';
import type { Phase } from './phase.js';

const COPY_TIMEOUT_MS = 10 * 60_000;

export const copyGolden: Phase = {
  name: 'copy-golden',
  optional: true,
  attempts: 2,
  backoffMs: 2000,
  async run({ thopter, provider, transport, machineLog, signal }) {
    const name = thopter.request.gc;
    const gc = await provider.goldenClaude(name);
    if (!gc) {
      return {
        outcome: 'skipped',
        summary: `no golden claude "${name}"`,
        warning: `there is no golden claude "${name}": the agent starts without a copied login and settings`,
      };
    }
    const pipe = new PassThrough();
    try {
      const busy = await gc.busy();
      if (busy) {
        return {
          outcome: 'skipped',
          summary: `golden claude "${name}" not copied`,
          warning: `golden claude "${name}" was not copied: ${busy}`,
        };
      }
      const target = await transport();
      // Streamed from the golden claude through the hub into the thopter: no temp file on either
      // side. .bashrc is the thopter's own; .claude/projects holds the golden claude's sessions.
      // When either side fails, the other is stopped at once rather than left waiting on a pipe
      // nobody reads or an input that never ends.
      const either = new AbortController();
      const opts = { signal: AbortSignal.any([signal, either.signal]), timeoutMs: COPY_TIMEOUT_MS };
      const side = (p: Promise<ExecResult>, what: string) =>
        p.then(
          (r) => {
            if (r.exitCode !== 0) either.abort(`${what} failed`);
            return r;
          },
          (err: unknown) => {
            either.abort(`${what} failed`);
            throw err;
          },
        );
      const [pack, unpack] = await Promise.allSettled([
        side(
          gc.transport.exec(
            [
              'tar',
              '-C',
              gc.transport.paths.home,
              '--exclude=./.bashrc',
              '--exclude=./.claude/projects',
              '-cf',
              '-',
              '.',
            ],
            { ...opts, stdout: pipe },
          ),
          'reading the golden claude',
        ),
        side(
          target.exec(['tar', '-C', target.paths.home, '--no-same-owner', '-xf', '-'], {
            ...opts,
            input: pipe,
          }),
          'unpacking into the thopter',
        ),
      ]);
      if (
        pack.status === 'rejected' ||
        unpack.status === 'rejected' ||
        pack.value.exitCode ||
        unpack.value.exitCode
      ) {
        const why = [pack, unpack]
          .map((r) =>
            r.status === 'rejected'
              ? String((r.reason as Error).message)
              : r.value.exitCode
                ? r.value.stderr.trim()
                : '',
          )
          .filter(Boolean)
          .join('; ');
        throw new ThopterError(
          'transport',
          `copying golden claude "${name}" failed: ${why.slice(-500)}`,
          true,
        );
      }
      await machineLog(`copied golden claude "${name}" into ${target.paths.home}`);
      return { summary: `copied golden claude "${name}"` };
    } finally {
      pipe.destroy();
      await gc.transport.close();
    }
  },
};
