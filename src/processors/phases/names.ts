/** The provisioning phases, in the order they run. The flow builder and the worker both read this. */
export const PHASE_NAMES = [
  'create-machine',
  'wait-ready',
  'copy-golden',
  'clone-repo',
  'write-context',
  'post-checkout',
  'launch-agent',
] as const;

export type PhaseName = (typeof PHASE_NAMES)[number];

export const isPhaseName = (s: string): s is PhaseName => (PHASE_NAMES as readonly string[]).includes(s);
