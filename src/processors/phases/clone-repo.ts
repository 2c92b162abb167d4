import path from 'node:path';
import { ThopterError } from '../../errors.js';
import { shellQuote } from '../../providers/shell.js';
import type { Transport } from '../../providers/types.js';
import { gitTokenFile, replaceGitToken } from '../git-token.js';
import { gitIdentity, type Phase } from './phase.js';
import { machineOf } from './wait-ready.js';

/**
 * Hands git the repository's token from a file only the thopter user can read (seed phase 4
 * put the PAT into the clone URL, and so into .git/config). Nothing but the token file's path is
 * in git's config, and no process ever gets the token as an argument: cat reads it from the file.
 */
const CREDENTIAL_HELPER = `#!/bin/sh
# Written by the thopter hub. git runs this for credentials; see credential.helper in .git/config.
[ "$1" = get ] || exit 0
token_file="$(dirname "$0")/git-token"
[ -r "$token_file" ] || exit 0
printf 'username=x-access-token\\npassword='
cat "$token_file"
`;

export const cloneRepo: Phase = {
  name: 'clone-repo',
  optional: false,
  attempts: 3,
  backoffMs: 3000,
  async run({ thopter, config, transport, machineLog, signal, firstRun, thopterTokens, store, log }) {
    const { request } = thopter;
    const { workBranch } = machineOf(thopter);
    const t = await transport();
    const repoDir = path.join(t.paths.workspace, request.repoName);
    const git = async (args: string[], timeoutMs = 60_000) => {
      const r = await t.exec(['git', ...args], { signal, timeoutMs, env: { GIT_TERMINAL_PROMPT: '0' } });
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
    const { userName, userEmail } = gitIdentity(settings);
    const options = ['-c', `user.name=${userName}`, '-c', `user.email=${userEmail}`];
    const overHttp = /^https?:\/\//.test(request.cloneUrl);
    // With the GitHub App, a token for this repository alone, contents and pull requests only.
    // Failing to get one fails the phase in words that say what to do: there is no other token.
    const minted = overHttp
      ? await thopterTokens?.thopterToken(request.repository, request.source === 'github')
      : undefined;
    const token = settings?.agentCoderPAT ?? minted?.token;
    if (token && overHttp) {
      const dir = path.join(t.paths.home, '.thopter');
      // A retry's earlier token is revoked as this one replaces it.
      if (minted && thopterTokens) await replaceGitToken(t, thopterTokens, minted.token, log);
      else await t.writeFile(gitTokenFile(t), token + '\n', 0o600);
      await t.writeFile(path.join(dir, 'git-credential'), CREDENTIAL_HELPER, 0o700);
      // The empty value first drops any helper a golden claude's ~/.gitconfig names (a `store`
      // helper would write the token to ~/.git-credentials); both land in the clone's config, so
      // the agent's pushes use the same helper.
      const helper = `!${shellQuote(path.join(dir, 'git-credential'))}`;
      options.push('-c', 'credential.helper=', '-c', `credential.helper=${helper}`);
    }
    if (minted) {
      await store.setGitToken(thopter.id, {
        expiresAt: minted.expiresAt,
        mintedAt: new Date().toISOString(),
      });
    }
    await git(['clone', ...options, '--', request.cloneUrl, repoDir], 15 * 60_000);
    if (request.continues) {
      await checkOutContinued(t, repoDir, workBranch, request.continues.thopterId, signal);
      await machineLog(`cloned ${request.repository} into ${repoDir} on the existing branch ${workBranch}`);
      return {
        summary: `cloned ${request.repository} on ${workBranch}, continuing ${request.continues.thopterId}`,
      };
    }
    await git(['-C', repoDir, 'checkout', '-B', workBranch]);
    await machineLog(`cloned ${request.repository} into ${repoDir} on branch ${workBranch}`);
    return { summary: `cloned ${request.repository} on ${workBranch}` };
  },
};

/**
 * Puts a continuing thopter's clone on the ended thopter's work branch as origin has it, so the
 * earlier commits are there and the agent's pushes go on top of them. A branch origin no longer
 * has fails the thopter rather than starting fresh from the default branch: the agent was asked
 * to carry on work it would not find, and its first push would start a second history.
 */
async function checkOutContinued(
  t: Transport,
  repoDir: string,
  workBranch: string,
  continued: string,
  signal: AbortSignal,
): Promise<void> {
  const git = (args: string[]) =>
    t.exec(['git', '-C', repoDir, ...args], {
      signal,
      timeoutMs: 5 * 60_000,
      env: { GIT_TERMINAL_PROMPT: '0' },
    });
  const remote = `refs/remotes/origin/${workBranch}`;
  // A full clone brings every branch; a clone narrowed by the golden claude's git config may not.
  if ((await git(['rev-parse', '--verify', '--quiet', remote])).exitCode !== 0) {
    const fetched = await git(['fetch', 'origin', `+refs/heads/${workBranch}:${remote}`]);
    if (fetched.exitCode !== 0) {
      const gone = /couldn't find remote ref|not our ref/i.test(fetched.stderr);
      throw new ThopterError(
        'phase',
        gone
          ? `the work branch ${workBranch} of ${continued} is not on origin (it was never pushed, or was deleted or renamed since): nothing to continue; write \`/thopter\` to start afresh`
          : `git fetch of ${workBranch} failed: ${fetched.stderr.trim().slice(-800)}`,
        !gone,
      );
    }
  }
  const r = await git(['checkout', '-B', workBranch, remote]);
  if (r.exitCode !== 0) {
    throw new ThopterError(
      'phase',
      `git checkout of ${workBranch} failed: ${r.stderr.trim().slice(-800)}`,
      true,
    );
  }
}
