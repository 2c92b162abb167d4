import { sleep, ThopterError } from '../../errors.js';
import type { Phase } from './phase.js';

/** Seed: checked every 2 s, for at most 120 s. */
const INTERVAL_MS = 2000;
const LIMIT_MS = 120_000;

export const waitReady: Phase = {
  name: 'wait-ready',
  optional: false,
  attempts: 2,
  backoffMs: 1000,
  async run({ thopter, provider, signal }) {
    const id = machineOf(thopter).id;
    const started = Date.now();
    while (!(await provider.ready(id))) {
      if (Date.now() - started > LIMIT_MS) {
        throw new ThopterError('timeout', `machine ${id} was not ready after ${LIMIT_MS / 1000} s`, true);
      }
      await sleep(INTERVAL_MS, signal);
    }
    return { summary: `machine ready after ${((Date.now() - started) / 1000).toFixed(1)} s` };
  },
};

export function machineOf(thopter: { machine?: { id: string; workBranch: string } }) {
  if (!thopter.machine) throw new ThopterError('machine', 'no machine is recorded for this thopter');
  return thopter.machine;
}
