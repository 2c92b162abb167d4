/**
 * The end of the agent's turn, known exactly rather than guessed from the screen: Claude Code runs
 * its `Stop` hook each time it finishes answering and waits for input. The hook the hub passes
 * appends one line to a file in the thopter's home; the hub (local provider) or the observer (Fly)
 * counts the lines. Shared by both, like activity.ts.
 */

/** Under the thopter user's home: one line per ended turn, `<ISO time>\t<the hook's input>`. */
export const TURNS_FILE = '.thopter/turns.log';
/** Under the thopter user's home: the settings the hub adds to the golden claude's own. */
export const AGENT_SETTINGS_FILE = '.thopter/agent-settings.json';

/** What the session shows of the agent's turns so far. */
export interface Turns {
  /** How many turns have ended since the agent was launched. */
  count: number;
  /** When the last one ended. */
  lastEndedAt?: string;
}

/**
 * The hook's command. Its input (JSON on stdin: session id, transcript path) follows the time on
 * the same line; newlines are dropped, which JSON allows, so a line is always one turn. It prints
 * nothing and exits 0, so it never asks Claude Code to go on.
 */
const STOP_HOOK =
  '{ date -u +%Y-%m-%dT%H:%M:%S.%3NZ | tr -d "\\n"; printf "\\t"; tr -d "\\n\\t"; echo; } >> "$HOME/' +
  TURNS_FILE +
  '"';

/**
 * The settings passed with `--settings`: Claude Code merges them with the user's, so the golden
 * claude's own settings (its hooks included) stay in force.
 */
export function agentSettings(): string {
  const settings = { hooks: { Stop: [{ hooks: [{ type: 'command', command: STOP_HOOK, timeout: 10 }] }] } };
  return JSON.stringify(settings, null, 2) + '\n';
}

/**
 * The agent command as it is typed: when its program is Claude Code, with the hub's settings
 * added right after it. Any other program is typed as given; its turns are not counted, and its
 * exit is what the hub sees.
 */
export function withTurnHook(command: string): string {
  const m = /^(\s*(?:\S*\/)?claude)(?=\s|$)/.exec(command);
  if (!m) return command;
  return `${m[1]} --settings "$HOME/${AGENT_SETTINGS_FILE}"${command.slice(m[1]!.length)}`;
}

/** TURNS_FILE's whole lines, one per ended turn: a torn last line (the hook still writing) is left out. */
function turnLines(text: string): Array<{ at: string; input: string }> {
  const lines = text.split('\n');
  lines.pop(); // what follows the last newline: nothing, or a line still being written
  const turns = [];
  for (const line of lines) {
    const tab = line.indexOf('\t');
    const at = line.slice(0, tab);
    if (tab < 0 || Number.isNaN(Date.parse(at))) continue;
    turns.push({ at: new Date(at).toISOString(), input: line.slice(tab + 1) });
  }
  return turns;
}

/** Reads TURNS_FILE's text: a torn last line (the hook still writing) is not counted yet. */
export function parseTurns(text: string): Turns {
  const turns = turnLines(text);
  const lastEndedAt = turns.at(-1)?.at;
  return lastEndedAt ? { count: turns.length, lastEndedAt } : { count: turns.length };
}

/**
 * What the agent said last in turn `n` (from 1), as its Stop hook was given it: Claude Code passes
 * the text of the last assistant message as `last_assistant_message`, complete when the turn ends
 * (the transcript may be written a moment later). Undefined when that turn's line is not there or
 * carries no such text (a Claude Code without the field): the transcript is then the source.
 */
export function turnMessage(text: string, n: number): { text: string; at: string } | undefined {
  const turn = turnLines(text)[n - 1];
  if (!turn) return undefined;
  try {
    const said = (JSON.parse(turn.input) as { last_assistant_message?: unknown }).last_assistant_message;
    return typeof said === 'string' && said.trim() ? { text: said.trim(), at: turn.at } : undefined;
  } catch {
    return undefined;
  }
}
