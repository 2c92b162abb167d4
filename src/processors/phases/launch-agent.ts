import { sleep, ThopterError } from '../../errors.js';
import { SESSION, type SessionSnapshot } from '../../providers/types.js';
import { withTurnHook } from '../../status/turns.js';
import type { Phase } from './phase.js';
import { machineOf } from './wait-ready.js';

/** A typed command has a process within milliseconds; a loaded machine gets this long. */
const START_TIMEOUT_MS = 15_000;
const POLL_MS = 250;

export const launchAgent: Phase = {
  name: 'launch-agent',
  optional: false,
  attempts: 3,
  backoffMs: 2000,
  async run({ thopter, config, provider, transport, machineLog, firstRun, signal }) {
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
    // Claude Code gets the hub's settings too, so the end of each turn is known (status/turns.ts).
    const command = withTurnHook(config.agentCommand);
    const keys = ['send-keys', '-t', SESSION, '-l', command, ';', 'send-keys', '-t', SESSION, 'Enter'];
    const r = await t.exec(['tmux', ...keys]);
    if (r.exitCode !== 0) {
      throw new ThopterError(
        'machine',
        `could not type into the terminal session "${SESSION}": ${r.stderr.trim()}`,
        true,
      );
    }
    // The shell stays when the agent is missing or dies, so "typed" is not "started": the agent
    // must be seen running, and still be running agentSettleMs later. Typing it again cannot
    // install it, so the failure is not retried, and the slot is freed at once.
    const started = Date.now();
    let runningSince: number | undefined;
    for (;;) {
      const now = await provider.snapshot(machine.id, t);
      if (now.agentRunning) {
        runningSince ??= Date.now();
        if (Date.now() - runningSince >= config.agentSettleMs) break;
      } else if (runningSince !== undefined || Date.now() - started >= START_TIMEOUT_MS) {
        const what =
          runningSince === undefined
            ? `was not running ${START_TIMEOUT_MS / 1000} s after it was typed`
            : 'exited right after it started';
        await machineLog(`the agent ${what}; the terminal shows:\n${now.screen.trimEnd()}`);
        throw new ThopterError(
          'phase',
          `the agent ${what} (its terminal ends with ${lastLines(now)}): check that THOPTER_AGENT_COMMAND (${config.agentCommand}) runs on the machine`,
          false,
        );
      }
      await sleep(POLL_MS, signal);
    }
    await machineLog(`launched the agent: ${command}`);
    return { summary: `agent started: ${command}` };
  },
};

/**
 * The screen's last lines as one inline-code span for the status comment and the dashboard:
 * backticks are dropped so the span cannot be closed early.
 */
function lastLines(snapshot: SessionSnapshot, count = 3): string {
  const lines = snapshot.screen
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .slice(-count);
  if (!lines.length) return 'nothing: the terminal is blank';
  const text = lines.join(' ⏎ ').replaceAll('`', "'");
  return `\`${text.length > 300 ? '…' + text.slice(-300) : text}\``;
}
