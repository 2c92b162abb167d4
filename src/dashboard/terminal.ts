import type { IncomingMessage, Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import { z } from 'zod';
import { sameOrigin } from '../api/auth.js';
import { markAuthenticated } from '../api/http.js';
import type { Logger } from '../log.js';
import type { TransportPool } from '../processors/deps.js';
import { SESSION } from '../providers/types.js';
import type { ThopterStore } from '../thopters/store.js';
import { SESSION_COOKIE, type Sessions } from './sessions.js';
import { sendKeysCommands, TmuxControl } from './tmux-control.js';

const PATH = /^\/thopters\/(thopter-[a-z0-9-]{1,80})\/terminal\/ws(?:\?(.*))?$/;
/** A viewer that reads slower than this much unsent output is too far behind to be useful. */
const MAX_BUFFERED = 8 * 1024 * 1024;

const messageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('input'), data: z.string().max(64 * 1024) }),
  z.object({
    type: z.literal('resize'),
    cols: z.number().int().min(10).max(500),
    rows: z.number().int().min(4).max(200),
  }),
]);

export interface TerminalDeps {
  sessions: Sessions;
  store: ThopterStore;
  transports: TransportPool;
  publicUrl?: string;
  log: Logger;
}

/**
 * The dashboard's web terminal: the browser opens a websocket to the hub only
 * (`/thopters/:id/terminal/ws`, `?mode=view` for read-only); the hub checks the session cookie and
 * the Origin, then attaches to the thopter's tmux session in control mode over the machine's
 * transport (a local process, or the SSH connection to a Fly machine). Output goes to the browser
 * as binary frames; keys and sizes come back as JSON.
 */
export function attachTerminals(server: Server, deps: TerminalDeps): () => void {
  const wss = new WebSocketServer({ noServer: true, maxPayload: 128 * 1024 });
  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    void upgrade(req, socket, head).catch((err) => {
      deps.log.warn({ err: (err as Error).message }, 'terminal connection failed');
      refuse(socket, 500, 'internal error');
    });
  };
  const upgrade = async (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const m = PATH.exec(req.url ?? '');
    if (!m) return refuse(socket, 404, 'no such websocket');
    // A page on another site can open a websocket with the user's cookie: only the hub's own
    // pages may. (Browsers always send Origin on websockets.)
    if (!req.headers.origin || !sameOrigin(req.headers.origin, req.headers.host, deps.publicUrl)) {
      return refuse(socket, 403, 'websocket from another origin');
    }
    const session = await deps.sessions.get(cookieValue(req.headers.cookie, SESSION_COOKIE));
    if (!session) return refuse(socket, 401, 'sign in first');
    markAuthenticated(socket);
    const record = await deps.store.get(m[1]!);
    if (!record) return refuse(socket, 404, 'no such thopter');
    // A kept thopter (failed, machine kept by THOPTER_KEEP_FAILED) has its terminal for a look.
    if ((record.state !== 'running' && record.state !== 'kept') || !record.machine) {
      return refuse(socket, 409, `thopter is ${record.state}: it has no terminal`);
    }
    const readOnly = new URLSearchParams(m[2] ?? '').get('mode') === 'view';
    const machineId = record.machine.id;
    wss.handleUpgrade(req, socket, head, (ws) => {
      void bridge(ws, machineId, readOnly).catch((err) => {
        deps.log.warn({ thopter: record.id, err: (err as Error).message }, 'terminal failed');
        send(ws, { type: 'exit', reason: `the terminal could not be opened: ${(err as Error).message}` });
        ws.close(1011);
      });
    });
  };

  const bridge = async (ws: WebSocket, machineId: string, readOnly: boolean) => {
    const transport = await deps.transports.get(machineId);
    const io = await transport.open(['tmux', '-C', 'attach-session', '-t', SESSION]);
    let pane = '';
    let painted = false;
    const tmux = new TmuxControl(io, {
      output: (from, data) => {
        if (from !== pane || !painted || ws.readyState !== ws.OPEN) return;
        if (ws.bufferedAmount > MAX_BUFFERED) return ws.close(1013, 'too far behind');
        ws.send(data, { binary: true });
      },
      exit: (reason) => {
        send(ws, { type: 'exit', reason });
        ws.close(1000);
      },
    });
    ws.once('close', () => tmux.close());
    if (ws.readyState !== ws.OPEN) return tmux.close();
    // Listening from the start: a message sent the moment the socket opened waits for the attach.
    // Messages are handled one at a time, in order: keys are never reordered.
    let attached!: () => void;
    let chain = new Promise<void>((resolve) => (attached = resolve));
    ws.on('message', (raw: RawData, isBinary: boolean) => {
      chain = chain
        .then(async () => {
          if (isBinary) return;
          const parsed = messageSchema.safeParse(safeJson(raw.toString()));
          if (!parsed.success) return send(ws, { type: 'error', message: 'unknown message' });
          const msg = parsed.data;
          if (readOnly) return send(ws, { type: 'error', message: 'this terminal is read-only' });
          if (msg.type === 'input') {
            for (const cmd of sendKeysCommands(pane, Buffer.from(msg.data, 'utf8'))) await tmux.command(cmd);
          } else {
            // The window is the agent's, and every viewer's: a browser may grow it but never shrink
            // it (a phone would squeeze the agent to 44 columns for everyone). A control client that
            // never sets its size does not count in tmux's window size at all.
            const [size] = await tmux.command(
              `display-message -p -t ${pane} '#{window_width} #{window_height}'`,
            );
            const [width = 0, height = 0] = (size ?? '').split(' ').map(Number);
            const cols = Math.max(msg.cols, width);
            const rows = Math.max(msg.rows, height);
            if (cols > width || rows > height) await tmux.command(`refresh-client -C ${cols}x${rows}`);
            send(ws, { type: 'size', cols, rows });
            await paint();
          }
        })
        .catch((err) => deps.log.debug({ err: (err as Error).message }, 'terminal message failed'));
    });

    const [info] = await tmux.command(
      `display-message -p -t ${SESSION} '#{pane_id} #{pane_width} #{pane_height}'`,
    );
    const [id, cols, rows] = (info ?? '').split(' ');
    if (!id || !/^%\d+$/.test(id)) throw new Error(`tmux did not name the pane (${info})`);
    pane = id;
    const paint = async () => {
      painted = false;
      const screen = await tmux.command(`capture-pane -p -e -t ${pane}`);
      const [cursor] = await tmux.command(`display-message -p -t ${pane} '#{cursor_x} #{cursor_y}'`);
      const [x, y] = (cursor ?? '0 0').split(' ').map(Number);
      // Trailing empty lines would scroll a smaller terminal: the cursor goes where tmux has it.
      while (screen.length > 0 && screen[screen.length - 1] === '') screen.pop();
      const frame = `\x1b[H\x1b[2J${screen.join('\r\n')}\x1b[${(y ?? 0) + 1};${(x ?? 0) + 1}H`;
      ws.send(Buffer.from(frame, 'utf8'), { binary: true });
      painted = true;
    };
    send(ws, { type: 'ready', cols: Number(cols), rows: Number(rows), readOnly });
    await paint();

    attached();
  };

  server.on('upgrade', onUpgrade);
  return () => {
    server.off('upgrade', onUpgrade);
    for (const ws of wss.clients) ws.terminate();
    wss.close();
  };
}

function send(ws: WebSocket, msg: object) {
  if (ws.readyState === ws.OPEN) ws.send(JSON.stringify(msg));
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function refuse(socket: Duplex, status: number, message: string) {
  if (!socket.writable) return socket.destroy();
  socket.end(
    `HTTP/1.1 ${status} ${message}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(message)}\r\n\r\n${message}`,
  );
}

function cookieValue(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0 || part.slice(0, eq).trim() !== name) continue;
    // A malformed escape (`%E0%A4%A`) is no session: the caller answers 401, not 500.
    try {
      return decodeURIComponent(part.slice(eq + 1).trim());
    } catch {
      return undefined;
    }
  }
  return undefined;
}
