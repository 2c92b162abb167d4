/**
 * The abort reason a hub gives its active jobs when it shuts down gracefully. A processor that
 * sees it puts its job back at the head of the line (`job.moveToWait`) and throws WaitingError,
 * so another hub, or this one after a restart, carries on with no stall counted.
 */
export const HANDOFF = 'handoff';

export const isHandoff = (signal?: AbortSignal) => signal?.aborted === true && signal.reason === HANDOFF;
