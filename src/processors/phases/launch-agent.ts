import { ThopterError } from '../../errors.js';
import { SESSION } from '../../providers/types.js';
import type { Phase } from './phase.js';
import { machineOf } from './wait-ready.js';

export const launchAgent: Phase = {
  name: 'launch-agent',
  optional: false,
  attempts: 3,
  backoffMs: 2000,
  async run({ thopter, config, provider, transport, machineLog, firstRun }) {
    const machine = machineOf(thopter);
    const t = await transport();
    if (!firstRun) {
      // A resumed job must not type the command a second time.
      const before = await provider.snapshot(machine.id, t);
      if (before.agentRunning) return { summary: 'the agent was already running' };
    }
    // The operator's command is typed into the session's shell, so people find a shell there when
    // the agent exits. Issue text never appears in it: the agent reads prompt.md. One tmux call:
    // `;` as an argument of its own separates tmux commands.
    const keys = [
      'send-keys',
      '-t',
      SESSION,
      '-l',
      config.agentCommand,
      ';',
      'send-keys',
      '-t',
      SESSION,
      'Enter',
    ];
    const r = await t.exec(['tmux', ...keys]);
    if (r.exitCode !== 0) {
      throw new ThopterError(
        'machine',
        `could not type into the terminal session "${SESSION}": ${r.stderr.trim()}`,
        true,
      );
    }
    await machineLog(`launched the agent: ${config.agentCommand}`);
    return { summary: `agent started: ${config.agentCommand}` };
  },
};
