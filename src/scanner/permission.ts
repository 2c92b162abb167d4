import type { ScannerDeps } from './github.js';

/** Users with these permissions may launch and kill (maintainers read as `write`). */
const ALLOWED = new Set(['admin', 'write']);
const PERMISSION_CACHE_S = 300;

/** Whether `login` may run commands on `repository`: write access (cached for a few minutes). */
export async function mayAct(deps: ScannerDeps, repository: string, login: string): Promise<boolean> {
  const cacheKey = `${deps.config.redisPrefix}:github:permission:${repository}:${login}`;
  let permission = await deps.redis.get(cacheKey);
  if (!permission) {
    try {
      permission = await deps.github.for(repository)!.permission(repository, login);
    } catch (err) {
      const status = (err as { status?: number }).status;
      if (status === 403) {
        throw new Error(
          deps.github.describeAppFailure(repository, err) ??
            `the issuesPAT of ${repository} may not read collaborators' permissions: its user needs push access to the repository`,
          { cause: err },
        );
      }
      // GitHub answers 404 for someone who is not a collaborator at all.
      if (status !== 404) throw err;
      permission = 'none';
    }
    await deps.redis.set(cacheKey, permission, 'EX', PERMISSION_CACHE_S);
  }
  return ALLOWED.has(permission);
}
