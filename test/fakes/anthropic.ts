/**
 * A scripted Anthropic Messages API for tests: a real HTTP server on 127.0.0.1 that the real
 * `claude` talks to through `ANTHROPIC_BASE_URL = fake.url`. A test gives it a script of what the
 * model "does" turn by turn (run Bash commands, write files, answer text, hold its answer until
 * the test lets it go), and reads back every request Claude Code sent.
 *
 * Wire format from Anthropic's API reference ("Messages", "Streaming Messages", "Errors") and the
 * @anthropic-ai/sdk types (`Message`, `RawMessageStreamEvent`):
 * - `POST /v1/messages` (Claude Code adds `?beta=true`), authenticated by `x-api-key` (or
 *   `Authorization: Bearer`), with an `anthropic-version` header; the body needs `model`,
 *   `max_tokens` and `messages`. Refusals are `{"type": "error", "error": {"type", "message"}}`
 *   with the documented codes: 401 authentication_error, 400 invalid_request_error, 404
 *   not_found_error.
 * - Non-streaming: 200 with a `Message` (`id` msg_…, `type: "message"`, `role: "assistant"`,
 *   `content` blocks, `model`, `stop_reason`, `stop_sequence`, `usage`).
 * - Streaming (`stream: true`): `text/event-stream` with `event:`/`data:` pairs: `message_start`
 *   (the message with empty content), `ping`, per block `content_block_start` → `content_block_delta`
 *   (`text_delta`, or `input_json_delta` with `partial_json` for a `tool_use` block, whose start
 *   carries `input: {}`) → `content_block_stop`, then `message_delta` (`stop_reason`, cumulative
 *   `usage.output_tokens`) and `message_stop`.
 * - `stop_reason` is `tool_use` when the reply calls a tool, else `end_turn`.
 *
 * Which requests take a step: only those that offer the model tools (the agent's own loop). Claude
 * Code may also ask small side questions without tools (a title, a summary); they get a short text
 * answer and do not move the script. Not modelled: `count_tokens`, batches, models, files,
 * thinking blocks, prompt caching (usage reports no cache tokens unless a step sets them), rate-limit headers.
 */
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ToolCall {
  name: string;
  input: Record<string, unknown>;
}

/** What the model does in one turn of the agent's loop. */
export interface Step {
  text?: string;
  tools?: ToolCall[];
  /** The answer is held until this resolves: the agent looks busy meanwhile. */
  after?: Promise<unknown>;
  /** The usage the response reports, in the API's words; unset fields are estimated from the text (cache: 0). */
  usage?: Partial<Usage>;
}

/** A response's `usage` object, as the Messages API reports it. */
export interface Usage {
  input_tokens: number;
  output_tokens: number;
  cache_creation_input_tokens: number;
  cache_read_input_tokens: number;
}

/** A step, or one decided from the request (what the model "read" in its tool results). */
export type ScriptedStep = Step | ((req: MessageRequest) => Step);

/** Runs a command with Claude Code's Bash tool. */
export const bash = (command: string, description = 'run a command'): ToolCall => ({
  name: 'Bash',
  input: { command, description },
});

/** Writes a file with Claude Code's Write tool (it wants an absolute path). */
export const write = (filePath: string, content: string): ToolCall => ({
  name: 'Write',
  input: { file_path: filePath, content },
});

export interface RecordedMessageRequest {
  path: string;
  headers: Record<string, string | string[] | undefined>;
  body: MessageRequest;
  /** The step index this request consumed, or undefined for a side question. */
  step?: number;
}

export interface MessageRequest {
  model: string;
  max_tokens: number;
  messages: { role: string; content: string | ContentBlock[] }[];
  system?: unknown;
  tools?: { name: string }[];
  stream?: boolean;
  [key: string]: unknown;
}

/** A block of a message as sent: text, tool_use, tool_result, image… */
type ContentBlock = { type: string; [key: string]: unknown };

/** A block of the model's reply. */
type ReplyBlock =
  | { type: 'text'; text: string }
  | { type: 'tool_use'; id: string; name: string; input: Record<string, unknown> };

export interface FakeAnthropicOptions {
  /** The key the fake accepts. */
  apiKey: string;
  /** The model's turns, in order. A turn past the end answers `idleText`. */
  script?: ScriptedStep[];
  /** What the model says when the script has run out. Default "Done." */
  idleText?: string;
}

function error(res: ServerResponse, status: number, type: string, message: string) {
  res.writeHead(status, { 'content-type': 'application/json', 'request-id': requestId() });
  res.end(JSON.stringify({ type: 'error', error: { type, message } }));
}

const requestId = () => `req_${randomBytes(12).toString('hex')}`;
const messageId = () => `msg_${randomBytes(12).toString('hex')}`;
const toolUseId = () => `toolu_${randomBytes(12).toString('hex')}`;
/** Every text the user sent and every tool result (as text) in one request's conversation. */
export function userTexts(req: MessageRequest): string[] {
  const out: string[] = [];
  for (const m of req.messages) {
    if (m.role !== 'user') continue;
    if (typeof m.content === 'string') out.push(m.content);
    else
      for (const b of m.content) {
        if (b.type === 'text' && typeof b.text === 'string') out.push(b.text);
        if (b.type === 'tool_result')
          out.push(typeof b.content === 'string' ? b.content : JSON.stringify(b.content));
      }
  }
  return out;
}

/** A rough token count: enough for usage figures that grow with the text. */
const tokens = (text: string) => Math.max(1, Math.ceil(text.length / 4));

export class FakeAnthropic {
  readonly requests: RecordedMessageRequest[] = [];
  private server: Server;
  private script: ScriptedStep[];
  private next = 0;
  url = '';

  constructor(private readonly opts: FakeAnthropicOptions) {
    this.script = [...(opts.script ?? [])];
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        if (!res.headersSent) error(res, 500, 'api_error', String(err));
        else res.destroy();
      });
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  /** Appends turns to the script (for a message typed into the session later). */
  push(...steps: ScriptedStep[]) {
    this.script.push(...steps);
  }

  /** How many scripted turns the model has taken. */
  get stepsTaken(): number {
    return this.next;
  }

  /** The newest request of the agent's own (a step), not one of Claude Code's side questions. */
  lastTurn(): RecordedMessageRequest | undefined {
    return this.requests.findLast((r) => r.step !== undefined);
  }

  /** Every text the user sent and every tool result, in the agent's conversation as last sent. */
  userTexts(): string[] {
    const last = this.lastTurn();
    return last ? userTexts(last.body) : [];
  }

  private async handle(req: IncomingMessage, res: ServerResponse) {
    const url = new URL(req.url ?? '/', 'http://x');
    if (req.method !== 'POST' || url.pathname !== '/v1/messages') {
      return error(res, 404, 'not_found_error', `Not found: ${req.method} ${url.pathname}`);
    }
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    if ((req.headers['x-api-key'] ?? bearer) !== this.opts.apiKey) {
      return error(res, 401, 'authentication_error', 'invalid x-api-key');
    }
    if (!req.headers['anthropic-version']) {
      return error(res, 400, 'invalid_request_error', 'anthropic-version: header is required');
    }
    let body: MessageRequest;
    try {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as MessageRequest;
    } catch {
      return error(res, 400, 'invalid_request_error', 'There was an issue with the format of your request');
    }
    for (const field of ['model', 'max_tokens', 'messages'] as const) {
      if (body[field] === undefined) {
        return error(res, 400, 'invalid_request_error', `${field}: Field required`);
      }
    }

    const agentTurn = Array.isArray(body.tools) && body.tools.length > 0;
    const record: RecordedMessageRequest = { path: req.url ?? '', headers: req.headers, body };
    let step: Step;
    if (agentTurn) {
      record.step = this.next;
      const scripted = this.script[this.next] ?? { text: this.opts.idleText ?? 'Done.' };
      step = typeof scripted === 'function' ? scripted(body) : scripted;
      this.next++;
    } else {
      step = { text: 'OK' };
    }
    this.requests.push(record);
    if (step.after) await step.after;

    const content: ReplyBlock[] = [];
    if (step.text !== undefined) content.push({ type: 'text', text: step.text });
    for (const t of step.tools ?? []) {
      content.push({ type: 'tool_use', id: toolUseId(), name: t.name, input: t.input });
    }
    const inputTokens = tokens(JSON.stringify(body.messages));
    const outputTokens = tokens(JSON.stringify(content));
    const message = {
      id: messageId(),
      type: 'message',
      role: 'assistant',
      model: body.model,
      content,
      stop_reason: step.tools?.length ? 'tool_use' : 'end_turn',
      stop_sequence: null,
      usage: {
        input_tokens: inputTokens,
        output_tokens: outputTokens,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 0,
        ...step.usage,
      },
    };
    if (!body.stream) {
      res.writeHead(200, { 'content-type': 'application/json', 'request-id': requestId() });
      return res.end(JSON.stringify(message));
    }

    res.writeHead(200, {
      'content-type': 'text/event-stream',
      'cache-control': 'no-cache',
      'request-id': requestId(),
    });
    const send = (event: string, data: unknown) =>
      res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    send('message_start', {
      type: 'message_start',
      message: { ...message, content: [], stop_reason: null, usage: { ...message.usage, output_tokens: 1 } },
    });
    send('ping', { type: 'ping' });
    content.forEach((block, index) => {
      if (block.type === 'text') {
        send('content_block_start', {
          type: 'content_block_start',
          index,
          content_block: { type: 'text', text: '' },
        });
        // Split in two, as the API streams text in pieces.
        const text = block.text;
        const half = Math.ceil(text.length / 2);
        for (const piece of [text.slice(0, half), text.slice(half)]) {
          if (piece)
            send('content_block_delta', {
              type: 'content_block_delta',
              index,
              delta: { type: 'text_delta', text: piece },
            });
        }
      } else {
        send('content_block_start', {
          type: 'content_block_start',
          index,
          content_block: { type: 'tool_use', id: block.id, name: block.name, input: {} },
        });
        const json = JSON.stringify(block.input);
        const cut = Math.ceil(json.length / 2);
        for (const partial of [json.slice(0, cut), json.slice(cut)]) {
          send('content_block_delta', {
            type: 'content_block_delta',
            index,
            delta: { type: 'input_json_delta', partial_json: partial },
          });
        }
      }
      send('content_block_stop', { type: 'content_block_stop', index });
    });
    send('message_delta', {
      type: 'message_delta',
      delta: { stop_reason: message.stop_reason, stop_sequence: null },
      // As the API does: message_start carried the input side, this the final output count.
      usage: { output_tokens: message.usage.output_tokens },
    });
    send('message_stop', { type: 'message_stop' });
    res.end();
  }
}
