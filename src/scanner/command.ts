import minimist from 'minimist';

/** What a `/thopter` line asks for. */
export type Command =
  | { kind: 'launch'; gc?: string; prompt?: string }
  /** `discard`: `--discard`, the agent's uncommitted work is not saved first. */
  | { kind: 'kill'; discard?: true }
  | { kind: 'invalid'; problem: string };

export interface FoundCommand {
  /** The line as written, for replies. */
  line: string;
  command: Command;
  /** How many more `/thopter` lines the same text holds: only the first counts. */
  ignored: number;
}

export const COMMAND_USAGE =
  '`/thopter` (launch with the default golden claude and prompt), `/thopter --gc NAME` (`-g`), ' +
  "`/thopter --prompt NAME` (`-p`), or `/thopter kill` (`stop`) to destroy this issue's thopters " +
  '(their uncommitted work is saved to their branch first; `/thopter kill --discard` does not)';

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const KNOWN_FLAGS = new Set(['gc', 'g', 'prompt', 'p', 'discard']);

/**
 * The lines of `text` that are `/thopter` commands: at the start of a line (up to three spaces
 * of indent, as Markdown allows), outside fenced code blocks and `>` quotes, and `/thopter` as a
 * whole word (`/thopters` is not one).
 */
export function commandLines(text: string): string[] {
  const found: string[] = [];
  let fence: string | null = null;
  for (const raw of text.split(/\r?\n/)) {
    const fenceMark = /^ {0,3}(`{3,}|~{3,})/.exec(raw)?.[1];
    if (fenceMark) {
      if (fence === null) fence = fenceMark;
      else if (fenceMark[0] === fence[0] && fenceMark.length >= fence.length) fence = null;
      continue;
    }
    if (fence !== null) continue;
    if (/^ {0,3}\/thopter(\s|$)/.test(raw)) found.push(raw.trim());
  }
  return found;
}

/** Parses one command line. Bad arguments give an `invalid` command that says what is wrong. */
export function parseCommand(line: string): Command {
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

/** The command a body or comment holds, if any: the first one counts. */
export function findCommand(text: string): FoundCommand | null {
  const lines = commandLines(text);
  const first = lines[0];
  if (first === undefined) return null;
  return { line: first, command: parseCommand(first), ignored: lines.length - 1 };
}
