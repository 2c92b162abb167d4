import path from 'node:path';
import { ThopterError } from '../../errors.js';
import type { Phase } from './phase.js';
import { machineOf } from './wait-ready.js';

export const DEFAULT_GIT_IDENTITY = { userName: 'Thopter', userEmail: 'thopter@localhost' };

export const cloneRepo: Phase = {
  name: 'clone-repo',
  optional: false,
  attempts: 3,
  backoffMs: 3000,
  async run({ thopter, config, transport, machineLog, signal }) {
    const { request } = thopter;
    const { workBranch } = machineOf(thopter);
    const t = await transport();
    const repoDir = path.join(t.paths.workspace, request.repoName);
    const git = async (args: string[], timeoutMs = 60_000) => {
      const r = await t.exec(['git', ...args], { signal, timeoutMs });
      if (r.exitCode !== 0) {
        throw new ThopterError('phase', `git ${args[0]} failed: ${r.stderr.trim().slice(-800)}`, true);
      }
      return r;
    };

    const settings = config.repositories[request.repository];
    await git(['config', '--global', 'user.name', settings?.userName ?? DEFAULT_GIT_IDENTITY.userName]);
    await git(['config', '--global', 'user.email', settings?.userEmail ?? DEFAULT_GIT_IDENTITY.userEmail]);
    // A half-finished clone from an earlier attempt would make git refuse: start clean.
    await t.exec(['rm', '-rf', '--', repoDir]);
    await git(['clone', '--', request.cloneUrl, repoDir], 15 * 60_000);
    await git(['-C', repoDir, 'checkout', '-B', workBranch]);
    await machineLog(`cloned ${request.repository} into ${repoDir} on branch ${workBranch}`);
    return { summary: `cloned ${request.repository} on ${workBranch}` };
  },
};
