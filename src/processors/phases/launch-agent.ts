import { ThopterError } from '../../errors.js';
import { SESSION } from '../../providers/types.js';
import type { Phase } from './phase.js';
import { machineOf } from './wait-ready.js';

export const launchAgent: Phase = {
  name: 'launch-agent',
  optional: false,
  attempts: 3,
  backoffMs: 2000,
  async run({ thopter, config, provider, transport, machineLog }) {
    const machine = machineOf(thopter);
    const before = await provider.snapshot(machine.id);
    if (!before.sessionAlive) {
      throw new ThopterError('machine', `the terminal session "${SESSION}" is gone`, true);
    }
    // A resumed job must not type the command a second time.
    if (before.agentRunning) return { summary: 'the agent was already running' };
    const t = await transport();
    // The operator's command is typed into the session's shell, so people find a shell there when
    // the agent exits. Issue text never appears in it: the agent reads prompt.md.
    for (const keys of [['-l', config.agentCommand], ['Enter']]) {
      const r = await t.exec(['tmux', 'send-keys', '-t', SESSION, ...keys]);
      if (r.exitCode !== 0)
        throw new ThopterError('machine', `tmux send-keys failed: ${r.stderr.trim()}`, true);
    }
    await machineLog(`launched the agent: ${config.agentCommand}`);
    return { summary: `agent started: ${config.agentCommand}` };
  },
};
