import path from 'node:path';
import type { ThopterTokens } from '../github/app.js';
import { messageOf } from '../errors.js';
import type { Logger } from '../log.js';
import type { Transport } from '../providers/types.js';
import type { ThopterRecord } from '../thopters/record.js';
import type { ProcessorDeps } from './deps.js';

/** Where the thopter's git token lives on its machine: read by the helper, replaced by the hub. */
export const gitTokenFile = (t: Transport) => path.join(t.paths.home, '.thopter', 'git-token');

/**
 * Puts `token` in the machine's token file and revokes the one it replaces: at most one of the
 * thopter's tokens works at a time. The old one is read from the machine, the only place it is kept.
 * A token that could not be put there is revoked: nothing would use it, and nobody could revoke it later.
 */
export async function replaceGitToken(t: Transport, tokens: ThopterTokens, token: string, log: Logger) {
  const file = gitTokenFile(t);
  let old: string;
  try {
    old = (await t.exists(file)) ? (await t.readFile(file)).toString('utf8').trim() : '';
    await t.writeFile(file, token + '\n', 0o600);
  } catch (err) {
    await revokeOrSay(tokens, token, log, 'the git token that could not be delivered');
    throw err;
  }
  if (old && old !== token) await revokeOrSay(tokens, old, log, 'the replaced git token');
}

async function revokeOrSay(tokens: ThopterTokens, token: string, log: Logger, what: string) {
  await tokens.revokeThopterToken(token).catch((err: unknown) => {
    log.warn({ err: messageOf(err) }, `${what} could not be revoked; it expires within the hour`);
  });
}

/** A replacement GitHub refused is asked again after this long, not at every check. */
const RETRY_AFTER_FAILURE_MS = 60_000;
const failedAt = new Map<string, number>();

/**
 * Replaces a running thopter's GitHub App token once it is within GITHUB_APP_TOKEN_RENEW_BEFORE of
 * expiring (tokens live an hour), so the agent's pushes keep working for as long as it lives. Called
 * from the lifecycle's supervision; a failure is logged and tried again at the next check.
 */
export async function renewGitTokenIfDue(
  deps: Pick<ProcessorDeps, 'thopterTokens' | 'config' | 'transports' | 'store'>,
  record: ThopterRecord,
  log: Logger,
) {
  const { thopterTokens, config } = deps;
  const renewBeforeMs = config.github.app?.renewBeforeMs;
  if (!record.gitToken || !record.machine || !thopterTokens || renewBeforeMs === undefined) return;
  if (Date.parse(record.gitToken.expiresAt) - Date.now() > renewBeforeMs) return;
  if (Date.now() - (failedAt.get(record.id) ?? 0) < RETRY_AFTER_FAILURE_MS) return;
  try {
    const minted = await thopterTokens.thopterToken(record.request.repository, true);
    if (!minted) return;
    await replaceGitToken(await deps.transports.get(record.machine.id), thopterTokens, minted.token, log);
    await deps.store.setGitToken(record.id, {
      expiresAt: minted.expiresAt,
      mintedAt: new Date().toISOString(),
    });
    await deps.store.addEvent(
      record.id,
      'git-token-renewed',
      `git token replaced; it expires at ${minted.expiresAt}`,
    );
    log.info({ expiresAt: minted.expiresAt }, 'git token replaced');
    failedAt.delete(record.id);
  } catch (err) {
    failedAt.set(record.id, Date.now());
    log.warn(
      { err: messageOf(err), expiresAt: record.gitToken.expiresAt },
      'the git token could not be replaced; trying again',
    );
  }
}

/**
 * Revokes the thopter's GitHub App token at its teardown (`DELETE /installation/token`, with the
 * token read from the machine): it must not outlive the machine by the rest of its hour. A machine
 * already gone takes its token with it, which then only expires.
 */
export async function revokeGitToken(
  deps: Pick<ProcessorDeps, 'thopterTokens' | 'transports' | 'log'>,
  record: ThopterRecord,
) {
  failedAt.delete(record.id);
  if (!record.gitToken || !record.machine || !deps.thopterTokens) return;
  try {
    const t = await deps.transports.get(record.machine.id);
    const file = gitTokenFile(t);
    if (!(await t.exists(file))) return;
    const token = (await t.readFile(file)).toString('utf8').trim();
    if (token) await deps.thopterTokens.revokeThopterToken(token);
    await t.exec(['rm', '-f', '--', file]);
  } catch (err) {
    deps.log.warn(
      { thopter: record.id, err: messageOf(err) },
      'the git token could not be revoked; it expires within the hour',
    );
  }
}
