import { cloneRepo } from './clone-repo.js';
import { copyGolden } from './copy-golden.js';
import { createMachine } from './create-machine.js';
import { launchAgent } from './launch-agent.js';
import { PHASE_NAMES, type PhaseName } from './names.js';
import type { Phase } from './phase.js';
import { postCheckout } from './post-checkout.js';
import { waitReady } from './wait-ready.js';
import { writeContext } from './write-context.js';

/** The provisioning phases, in order: the flow builder and the phase worker both read this. */
export const PHASES: readonly Phase[] = [
  createMachine,
  waitReady,
  copyGolden,
  cloneRepo,
  writeContext,
  postCheckout,
  launchAgent,
];

export const PHASE_BY_NAME = Object.fromEntries(PHASES.map((p) => [p.name, p])) as Record<PhaseName, Phase>;

if (PHASES.map((p) => p.name).join() !== PHASE_NAMES.join()) {
  throw new Error('PHASES and PHASE_NAMES disagree: keep them in the same order');
}

export type { Phase, PhaseContext, PhaseResult } from './phase.js';
export { PHASE_NAMES, type PhaseName } from './names.js';
