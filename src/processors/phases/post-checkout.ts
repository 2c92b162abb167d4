import path from 'node:path';
import { ThopterError } from '../../errors.js';
import type { Phase } from './phase.js';

export const postCheckout: Phase = {
  name: 'post-checkout',
  optional: true,
  attempts: 1,
  backoffMs: 1000,
  async run({ thopter, transport, machineLog, signal }) {
    const t = await transport();
    const script = path.join(t.paths.workspace, 'post-checkout.sh');
    if (!(await t.exists(script))) {
      return { outcome: 'skipped', summary: 'no post-checkout.sh' };
    }
    await machineLog('running post-checkout.sh');
    // Run in the repository, with .env.thopters loaded as the agent's shell loads it.
    const r = await t.exec(['bash', script], {
      cwd: path.join(t.paths.workspace, thopter.request.repoName),
      env: { BASH_ENV: path.join(t.paths.home, '.thopter_env') },
      signal,
      timeoutMs: 30 * 60_000,
    });
    await t.appendFile(t.paths.log, r.stdout + r.stderr);
    if (r.exitCode !== 0) {
      const tail = (r.stderr || r.stdout).trim().split('\n').slice(-5).join('\n');
      throw new ThopterError('phase', `post-checkout.sh exited with ${r.exitCode}: ${tail}`, false);
    }
    await machineLog('post-checkout.sh finished');
    return { summary: 'post-checkout.sh ran' };
  },
};
