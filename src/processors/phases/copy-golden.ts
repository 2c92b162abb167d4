import { PassThrough } from 'node:stream';
import { ThopterError } from '../../errors.js';
import type { Phase } from './phase.js';

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
    const busy = await gc.busy();
    if (busy) {
      await gc.transport.close();
      return {
        outcome: 'skipped',
        summary: `golden claude "${name}" not copied`,
        warning: `golden claude "${name}" was not copied: ${busy}`,
      };
    }
    const target = await transport();
    // Streamed from the golden claude through the hub into the thopter: no temp file on either
    // side. .bashrc is the thopter's own; .claude/projects holds the golden claude's sessions.
    const pipe = new PassThrough();
    try {
      const [pack, unpack] = await Promise.all([
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
          { stdout: pipe, signal, timeoutMs: 10 * 60_000 },
        ),
        // When the receiving side ends, for good or not, the sending side must not wait on a
        // pipe nobody reads.
        target
          .exec(['tar', '-C', target.paths.home, '--no-same-owner', '-xf', '-'], {
            input: pipe,
            signal,
            timeoutMs: 10 * 60_000,
          })
          .finally(() => pipe.destroy()),
      ]);
      if (pack.exitCode !== 0 || unpack.exitCode !== 0) {
        throw new ThopterError(
          'transport',
          `copying golden claude "${name}" failed: ${(unpack.stderr || pack.stderr).trim().slice(-500)}`,
          true,
        );
      }
    } finally {
      pipe.destroy();
      await gc.transport.close();
    }
    await machineLog(`copied golden claude "${name}" into ${target.paths.home}`);
    return { summary: `copied golden claude "${name}"` };
  },
};
