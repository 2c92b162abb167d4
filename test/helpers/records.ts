import type { Request, ThopterRecord, ThopterState } from '../../src/thopters/record.js';

/** When the records these make were created, unless a test says otherwise. */
export const RECORD_AT = '2026-12-01T10:00:00.000Z';

/** A launch request as intake makes one, for records built by hand: alice's on acme/widget#7. */
export function aRequest(extra: Partial<Request> = {}): Request {
  return {
    id: 'thopter-0123456789ab',
    source: 'github',
    repository: 'acme/widget',
    cloneUrl: 'https://github.com/acme/widget.git',
    repoName: 'widget',
    issue: { number: 7, title: 'Fix it', body: '', comments: [] },
    gc: 'default',
    prompt: 'default',
    priority: 10,
    requestedBy: 'alice',
    createdAt: RECORD_AT,
    ...extra,
  };
}

/** A thopter's record in `state`, its request aRequest(`request`) with the record's id. */
export function aThopter(
  state: ThopterState,
  extra: Partial<ThopterRecord> = {},
  request: Partial<Request> = {},
): ThopterRecord {
  const id = extra.id ?? request.id ?? 'thopter-0123456789ab';
  return {
    id,
    state,
    request: aRequest({ ...request, id }),
    phases: {},
    createdAt: RECORD_AT,
    updatedAt: RECORD_AT,
    ...extra,
  };
}
