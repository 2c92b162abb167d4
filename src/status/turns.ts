/**
 * The agent's turns, known exactly rather than guessed from the screen: Claude Code runs its
 * `UserPromptSubmit` hook each time it takes a prompt (a turn begins) and its `Stop` hook each time
 * it finishes answering and waits for input. The hooks the hub passes append one line each to a
 * file in the thopter's home; the hub (local provider) or the observer (Fly) reads the lines.
 * Shared by both, like activity.ts.
 */

/**
 * Under the thopter user's home: one line per ended turn, `<ISO time>\t<the Stop hook's input>`,
 * and one per prompt taken, `<ISO time>\tprompt`.
 */
export const TURNS_FILE = '.thopter/turns.log';
/** Under the thopter user's home: the settings the hub adds to the golden claude's own. */
export const AGENT_SETTINGS_FILE = '.thopter/agent-settings.json';

/** What the session shows of the agent's turns so far. */
export interface Turns {
  /** How many turns have ended since the agent was launched. */
  count: number;
  /** When the last one ended. */
  lastEndedAt?: string;
  /**
   * When the agent last took a prompt (a turn began). A turn that ended after it means the agent
   * waits for input; Claude Code's screen does not say so reliably (it draws notices for a while
   * after a turn ends). Absent from an observer older than this mark.
   */
  lastStartedAt?: string;
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

/** What the hook's command writes after the time when a prompt is taken. */
export const PROMPT_MARK = 'prompt';

/**
 * The `UserPromptSubmit` hook's command: the time and the mark, not the prompt (the transcript has
 * it). It reads its input to the end, prints nothing (what it prints would be added to the
 * prompt) and exits 0 (anything else could block the prompt).
 */
const PROMPT_HOOK =
  'cat > /dev/null; { date -u +%Y-%m-%dT%H:%M:%S.%3NZ | tr -d "\\n"; printf "\\t' +
  PROMPT_MARK +
  '\\n"; } >> "$HOME/' +
  TURNS_FILE +
  '"';

/**
 * The settings passed with `--settings`: Claude Code merges them with the user's, so the golden
 * claude's own settings (its hooks included) stay in force.
 */
export function agentSettings(): string {
  const hook = (command: string) => [{ hooks: [{ type: 'command', command, timeout: 10 }] }];
  const settings = { hooks: { UserPromptSubmit: hook(PROMPT_HOOK), Stop: hook(STOP_HOOK) } };
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

/**
 * TURNS_FILE's whole lines: the ended turns, and when the last prompt was taken. A torn last line
 * (a hook still writing) is left out.
 */
function turnLines(text: string): { ended: Array<{ at: string; input: string }>; lastStartedAt?: string } {
  const lines = text.split('\n');
  lines.pop(); // what follows the last newline: nothing, or a line still being written
  const ended = [];
  let lastStartedAt: string | undefined;
  for (const line of lines) {
    const tab = line.indexOf('\t');
    const at = line.slice(0, tab);
    if (tab < 0 || Number.isNaN(Date.parse(at))) continue;
    const input = line.slice(tab + 1);
    if (input === PROMPT_MARK) lastStartedAt = new Date(at).toISOString();
    else ended.push({ at: new Date(at).toISOString(), input });
  }
  return lastStartedAt ? { ended, lastStartedAt } : { ended };
}

/**
 * Whether the agent waits for input, by its hooks' marks: its last turn ended after it last took a
 * prompt. Undefined when there is no prompt mark to go by (an observer or settings older than it).
 */
export function waitsByMarks(turns: Turns | undefined): boolean | undefined {
  if (!turns?.lastStartedAt) return undefined;
  return !!turns.lastEndedAt && Date.parse(turns.lastEndedAt) >= Date.parse(turns.lastStartedAt);
}

/** Reads TURNS_FILE's text: a torn last line (a hook still writing) is not counted yet. */
export function parseTurns(text: string): Turns {
  const { ended, lastStartedAt } = turnLines(text);
  const lastEndedAt = ended.at(-1)?.at;
  return {
    count: ended.length,
    ...(lastEndedAt ? { lastEndedAt } : {}),
    ...(lastStartedAt ? { lastStartedAt } : {}),
  };
}

/**
 * What the agent said last in turn `n` (from 1), as its Stop hook was given it: Claude Code passes
 * the text of the last assistant message as `last_assistant_message`, complete when the turn ends
 * (the transcript may be written a moment later). Undefined when that turn's line is not there or
 * carries no such text (a Claude Code without the field): the transcript is then the source.
 */
export function turnMessage(text: string, n: number): { text: string; at: string } | undefined {
  const turn = turnLines(text).ended[n - 1];
  if (!turn) return undefined;
  try {
    const said = (JSON.parse(turn.input) as { last_assistant_message?: unknown }).last_assistant_message;
    return typeof said === 'string' && said.trim() ? { text: said.trim(), at: turn.at } : undefined;
  } catch {
    return undefined;
  }
}
