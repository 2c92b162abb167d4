import minimist from 'minimist';

/** What a `/thopter` line asks for. */
export type Command =
  | { kind: 'launch'; gc?: string; prompt?: string }
  /** `discard`: `--discard`, the agent's uncommitted work is not saved first. */
  | { kind: 'kill'; discard?: true }
  /**
   * A message for a live thopter's agent: `text` is the rest of the command's line and the lines
   * after it, up to the next command. `id` (`--id`) picks one of several thopters on the issue.
   */
  | { kind: 'tell'; text: string; id?: string }
  /** A new thopter on an ended thopter's work branch; `text`, when given, is said to it first. */
  | { kind: 'continue'; text?: string; id?: string }
  | { kind: 'invalid'; problem: string };

export interface FoundCommand {
  /** The line as written, for replies. */
  line: string;
  /** The lines after it, up to the next command or the end (what `tell` and `continue` carry). */
  following: string;
  command: Command;
  /** How many more `/thopter` lines the same text holds: only the first counts. */
  ignored: number;
}

export const COMMAND_USAGE =
  '`/thopter` (launch with the default golden claude and prompt), `/thopter --gc NAME` (`-g`), ' +
  "`/thopter --prompt NAME` (`-p`), `/thopter tell TEXT` (a message for this issue's live agent; " +
  "`--id ID` picks one), `/thopter continue [TEXT]` (a new thopter on the last one's work branch), " +
  "or `/thopter kill` (`stop`) to destroy this issue's thopters " +
  '(their uncommitted work is saved to their branch first; `/thopter kill --discard` does not)';

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
/** `tell` and `continue` with an optional `--id ID` (or `--id=ID`), then free text. */
const MESSAGE = /^\/thopter\s+(tell|continue)(?:\s+--id(?:=|\s+)(\S+))?(?:\s+([\s\S]*))?$/;
const THOPTER_ID = /^thopter-[a-z0-9]{1,32}$/;
const KNOWN_FLAGS = new Set(['gc', 'g', 'prompt', 'p', 'discard']);

/**
 * The lines of `text` that are `/thopter` commands: at the start of a line (up to three spaces
 * of indent, as Markdown allows), outside fenced code blocks and `>` quotes, and `/thopter` as a
 * whole word (`/thopters` is not one).
 */
export function commandLines(text: string): string[] {
  const lines = text.split(/\r?\n/);
  return commandLineIndexes(lines).map((i) => lines[i]!.trim());
}

function commandLineIndexes(lines: string[]): number[] {
  const found: number[] = [];
  let fence: string | null = null;
  for (const [i, raw] of lines.entries()) {
    const fenceMark = /^ {0,3}(`{3,}|~{3,})/.exec(raw)?.[1];
    if (fenceMark) {
      if (fence === null) fence = fenceMark;
      else if (fenceMark[0] === fence[0] && fenceMark.length >= fence.length) fence = null;
      continue;
    }
    if (fence !== null) continue;
    if (/^ {0,3}\/thopter(\s|$)/.test(raw)) found.push(i);
  }
  return found;
}

/**
 * Parses one command line (and, for `tell` and `continue`, the lines that follow it). Bad
 * arguments give an `invalid` command that says what is wrong.
 */
export function parseCommand(line: string, following = ''): Command {
  const message = MESSAGE.exec(line.trim());
  if (message) return parseMessage(message[1] as 'tell' | 'continue', message[2], message[3], following);
  const words = line.trim().split(/\s+/).slice(1);
  const argv = minimist(words, {
    string: ['gc', 'prompt'],
    boolean: ['discard'],
    alias: { g: 'gc', p: 'prompt' },
  });
  const unknown = Object.keys(argv).filter((k) => k !== '_' && !KNOWN_FLAGS.has(k));
  if (unknown.length) {
    const flags = unknown.map((k) => (k.length === 1 ? `-${k}` : `--${k}`)).join(', ');
    return { kind: 'invalid', problem: `unknown option ${flags}` };
  }
  const positional = argv._.map(String);
  if (positional.length === 1 && (positional[0] === 'kill' || positional[0] === 'stop')) {
    if (argv.gc !== undefined || argv.prompt !== undefined) {
      return { kind: 'invalid', problem: `\`${positional[0]}\` takes no options but --discard` };
    }
    return argv.discard === true ? { kind: 'kill', discard: true } : { kind: 'kill' };
  }
  if (argv.discard === true) return { kind: 'invalid', problem: '--discard goes only with `kill`' };
  if (positional.length > 0) return { kind: 'invalid', problem: `unexpected \`${positional.join(' ')}\`` };
  const command: Command = { kind: 'launch' };
  for (const key of ['gc', 'prompt'] as const) {
    const value: unknown = argv[key];
    if (value === undefined) continue;
    if (Array.isArray(value)) return { kind: 'invalid', problem: `--${key} is given more than once` };
    if (typeof value !== 'string' || value === '')
      return { kind: 'invalid', problem: `--${key} needs a name` };
    if (!NAME.test(value)) return { kind: 'invalid', problem: `--${key} \`${value}\` is not a valid name` };
    command[key] = value;
  }
  return command;
}

function parseMessage(
  kind: 'tell' | 'continue',
  id: string | undefined,
  rest: string | undefined,
  following: string,
): Command {
  if (id !== undefined && !THOPTER_ID.test(id)) {
    return {
      kind: 'invalid',
      problem: `--id \`${id}\` is not a thopter id (they look like thopter-0123abcd4567)`,
    };
  }
  const text = [rest?.trim() ?? '', following]
    .filter((part) => part !== '')
    .join('\n')
    .trim();
  if (kind === 'tell' && text === '') {
    return {
      kind: 'invalid',
      problem: '`tell` needs the message: write it after `tell`, on the same line or below',
    };
  }
  return {
    kind,
    ...(text ? { text } : {}),
    ...(id ? { id } : {}),
  } as Command;
}

/** The command a body or comment holds, if any: the first one counts. */
export function findCommand(text: string): FoundCommand | null {
  const lines = text.split(/\r?\n/);
  const indexes = commandLineIndexes(lines);
  const first = indexes[0];
  if (first === undefined) return null;
  const line = lines[first]!.trim();
  const following = lines.slice(first + 1, indexes[1] ?? lines.length).join('\n');
  return {
    line,
    following,
    command: parseCommand(line, following),
    ignored: indexes.length - 1,
  };
}
