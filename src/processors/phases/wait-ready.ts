import { sleep, ThopterError } from '../../errors.js';
import { SESSION, type Transport } from '../../providers/types.js';
import type { Phase } from './phase.js';

/** Seed: checked every 2 s, for at most 120 s. */
const INTERVAL_MS = 2000;
const LIMIT_MS = 120_000;

export const waitReady: Phase = {
  name: 'wait-ready',
  optional: false,
  attempts: 2,
  backoffMs: 1000,
  async run({ thopter, provider, transport, signal }) {
    const id = machineOf(thopter).id;
    const started = Date.now();
    let waitingFor = 'the machine to start';
    for (;;) {
      if (await provider.ready(id, signal)) {
        waitingFor = 'its init to finish';
        // The init's last step writes the ready marker after starting the session; until then
        // (or while sshd is not up yet) this goes round again. The same connection is then used
        // by every later phase.
        const t = await transport().catch((err: Error) => {
          waitingFor = `a connection (${err.message})`;
          return undefined;
        });
        if (t && (await initFinished(t))) break;
      }
      if (Date.now() - started > LIMIT_MS) {
        throw new ThopterError(
          'timeout',
          `machine ${id} was not ready after ${LIMIT_MS / 1000} s: still waiting for ${waitingFor}`,
          true,
        );
      }
      await sleep(INTERVAL_MS, signal);
    }
    return { summary: `machine ready after ${((Date.now() - started) / 1000).toFixed(1)} s` };
  },
};

/** The machine's init has written its ready marker and the terminal session exists. */
async function initFinished(t: Transport): Promise<boolean> {
  const r = await t.exec(
    ['sh', '-c', 'test -f "$1" && tmux has-session -t "$2"', 'sh', t.paths.ready, SESSION],
    {
      timeoutMs: 30_000,
    },
  );
  return r.exitCode === 0;
}

export function machineOf(thopter: { machine?: { id: string; workBranch: string } }) {
  if (!thopter.machine) throw new ThopterError('machine', 'no machine is recorded for this thopter');
  return thopter.machine;
}
