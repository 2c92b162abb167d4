import type { Interactive } from '../providers/types.js';

/**
 * A tmux control-mode client (`tmux -C attach`, see tmux(1) "CONTROL MODE") over any transport's
 * streams: commands go in as lines; replies come back between `%begin` and `%end`; the pane's
 * output comes as `%output %<pane> <bytes>` with control characters and backslash as octal escapes.
 * This is how the dashboard's terminal reaches a thopter without a terminal server or a pty: the
 * same code runs over a local process and over the SSH connection to a Fly machine.
 */
export class TmuxControl {
  private buffer: Buffer = Buffer.alloc(0);
  private readonly replies: Array<{ resolve: (lines: string[]) => void; reject: (err: Error) => void }> = [];
  /** The output block being read; `ours` is false for one no command of ours asked for (the attach's). */
  private block?: { lines: string[]; ours: boolean };
  private closed = false;

  constructor(
    private readonly io: Interactive,
    private readonly handlers: { output(pane: string, data: Buffer): void; exit(reason: string): void },
  ) {
    io.stdout.on('data', (chunk: Buffer) => this.read(chunk));
    void io.done.then(() => this.end('the terminal session ended'));
  }

  /** Runs one tmux command; resolves with its output lines, rejects with tmux's error. */
  command(line: string): Promise<string[]> {
    if (this.closed) return Promise.reject(new Error('the terminal session is closed'));
    if (/[\r\n]/.test(line)) return Promise.reject(new Error('a tmux command is one line'));
    return new Promise((resolve, reject) => {
      this.replies.push({ resolve, reject });
      this.io.stdin.write(line + '\n');
    });
  }

  close(): void {
    if (this.closed) return;
    this.io.close();
    this.end('closed');
  }

  private end(reason: string) {
    if (this.closed && this.replies.length === 0) return;
    this.closed = true;
    for (const r of this.replies.splice(0)) r.reject(new Error(reason));
    this.handlers.exit(reason);
  }

  private read(chunk: Buffer) {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf(0x0a)) >= 0) {
      const line = this.buffer.subarray(0, nl);
      this.buffer = this.buffer.subarray(nl + 1);
      this.line(line);
    }
  }

  private line(raw: Buffer) {
    if (this.block) {
      const text = raw.toString('utf8');
      if (/^%(end|error) /.test(text)) {
        const { lines, ours } = this.block;
        this.block = undefined;
        if (!ours) return;
        const waiter = this.replies.shift();
        if (text.startsWith('%error')) waiter?.reject(new Error(lines.join('\n') || 'tmux refused'));
        else waiter?.resolve(lines);
        return;
      }
      this.block.lines.push(text);
      return;
    }
    if (raw.subarray(0, 8).toString('latin1') === '%output ') {
      const space = raw.indexOf(0x20, 8);
      if (space < 0) return;
      this.handlers.output(
        raw.subarray(8, space).toString('latin1'),
        unescapeOutput(raw.subarray(space + 1)),
      );
      return;
    }
    const text = raw.toString('utf8');
    // `%begin time number flags`: flags is 1 when this client sent the command.
    if (text.startsWith('%begin ')) this.block = { lines: [], ours: text.trim().split(' ')[3] === '1' };
    else if (text.startsWith('%exit')) this.end(text.slice(6).trim() || 'the terminal session ended');
    // Other notifications (%session-changed, %window-add, …) change nothing for one pane.
  }
}

/** Undoes control mode's escaping: `\ooo` (octal) is one byte; every other byte is itself. */
export function unescapeOutput(data: Buffer): Buffer {
  if (!data.includes(0x5c)) return data;
  const out = Buffer.alloc(data.length);
  let n = 0;
  for (let i = 0; i < data.length; i++) {
    const b = data[i]!;
    if (
      b === 0x5c &&
      i + 3 < data.length &&
      isOctal(data[i + 1]) &&
      isOctal(data[i + 2]) &&
      isOctal(data[i + 3])
    ) {
      out[n++] = ((data[i + 1]! - 48) << 6) | ((data[i + 2]! - 48) << 3) | (data[i + 3]! - 48);
      i += 3;
    } else {
      out[n++] = b;
    }
  }
  return out.subarray(0, n);
}

const isOctal = (b: number | undefined) => b !== undefined && b >= 48 && b <= 55;

/** `send-keys -H` arguments for these bytes: every byte as two hex digits, so nothing is a key name. */
export function sendKeysCommands(target: string, data: Buffer, chunk = 256): string[] {
  const commands: string[] = [];
  for (let i = 0; i < data.length; i += chunk) {
    const hex = [...data.subarray(i, i + chunk)].map((b) => b.toString(16).padStart(2, '0'));
    commands.push(`send-keys -t ${target} -H ${hex.join(' ')}`);
  }
  return commands;
}
