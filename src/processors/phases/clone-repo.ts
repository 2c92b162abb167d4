import path from 'node:path';
import { ThopterError } from '../../errors.js';
import { shellQuote } from '../../providers/shell.js';
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
    await git(['-C', repoDir, 'checkout', '-B', workBranch]);
    await machineLog(`cloned ${request.repository} into ${repoDir} on branch ${workBranch}`);
    return { summary: `cloned ${request.repository} on ${workBranch}` };
  },
};
