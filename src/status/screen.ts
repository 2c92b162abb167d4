/**
 * What Claude Code's screen shows, for the few things the hub reads from it (a stall's settled
 * screen, a told message left in the input box). Its transcript and hooks are the sources of
 * truth; the screen only says what they cannot.
 */

/** A border of Claude Code's input box: a line of box-drawing dashes. */
export const BOX_BORDER = /^\s*─{10,}\s*$/;

/**
 * The text in Claude Code's input box: the lines between the last two borders on the screen, its
 * `❯` prompt left out ('' when empty). Undefined when the screen shows no such box (another
 * program, a dialog in its place).
 */
export function inputBox(screen: string): string | undefined {
  const lines = screen.split('\n');
  const borders = lines.flatMap((line, i) => (BOX_BORDER.test(line) ? [i] : []));
  if (borders.length < 2) return undefined;
  const box = lines
    .slice(borders.at(-2)! + 1, borders.at(-1))
    .join('\n')
    .trim();
  return box.startsWith('❯') ? box.slice(1).trim() : undefined;
}
