import path from 'node:path';
import { ThopterError } from '../../errors.js';
import type { Phase } from './phase.js';
import { machineOf } from './wait-ready.js';

const DEFAULT_GIT_IDENTITY = { userName: 'Thopter', userEmail: 'thopter@localhost' };

export const cloneRepo: Phase = {
  name: 'clone-repo',
  optional: false,
  attempts: 3,
  backoffMs: 3000,
  async run({ thopter, config, transport, machineLog, signal, firstRun }) {
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
    // A half-finished clone from an earlier attempt would make git refuse: start clean.
    if (!firstRun) await t.exec(['rm', '-rf', '--', repoDir]);
    // The agent's identity goes into the clone's own config (the seed used --global): the same
    // for the agent, two processes fewer, and a golden claude's ~/.gitconfig stays as it was.
    const name = settings?.userName ?? DEFAULT_GIT_IDENTITY.userName;
    const email = settings?.userEmail ?? DEFAULT_GIT_IDENTITY.userEmail;
    await git(
      ['clone', '-c', `user.name=${name}`, '-c', `user.email=${email}`, '--', request.cloneUrl, repoDir],
      15 * 60_000,
    );
    await git(['-C', repoDir, 'checkout', '-B', workBranch]);
    await machineLog(`cloned ${request.repository} into ${repoDir} on branch ${workBranch}`);
    return { summary: `cloned ${request.repository} on ${workBranch}` };
  },
};
