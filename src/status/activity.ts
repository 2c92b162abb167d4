/**
 * Whether a terminal session is active or idle, from successive screen captures: active while the
 * screen changes, idle once it has not changed for `idleAfterMs` (seed: 60 s). The observer inside
 * a thopter and the hub (for local thopters) both decide it here.
 */
export interface Activity {
  screen: string;
  lastActivity: string;
  idleSince?: string;
}

export function nextActivity(
  previous: Activity | undefined,
  screen: string,
  now: Date,
  idleAfterMs: number,
): Activity & { state: 'active' | 'idle' } {
  if (!previous || previous.screen !== screen) {
    return { screen, lastActivity: now.toISOString(), state: 'active' };
  }
  const quietFor = now.getTime() - Date.parse(previous.lastActivity);
  if (quietFor < idleAfterMs) return { ...previous, screen, idleSince: undefined, state: 'active' };
  const idleSince =
    previous.idleSince ?? new Date(Date.parse(previous.lastActivity) + idleAfterMs).toISOString();
  return { screen, lastActivity: previous.lastActivity, idleSince, state: 'idle' };
}
