import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { bash, FakeAnthropic } from './fakes/anthropic.js';

const KEY = 'sk-ant-fake-0123456789abcdefghij';
let fake: FakeAnthropic;
before(async () => {
  fake = await new FakeAnthropic({
    apiKey: KEY,
    script: [{ text: 'Looking.', tools: [bash('ls')] }, { text: 'Done.' }],
  }).start();
});
after(() => fake.close());

const tools = [{ name: 'Bash', description: 'run', input_schema: { type: 'object' } }];
const post = (body: unknown, headers: Record<string, string> = {}) =>
  fetch(`${fake.url}/v1/messages?beta=true`, {
    method: 'POST',
    headers: {
      'x-api-key': KEY,
      'anthropic-version': '2023-06-01',
      'content-type': 'application/json',
      ...headers,
    },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });

/** The SSE stream as [event, data] pairs. */
function events(text: string): [string, any][] {
  return text
    .split('\n\n')
    .filter(Boolean)
    .map((chunk) => {
      const event = /^event: (.*)$/m.exec(chunk)?.[1] ?? '';
      const data = JSON.parse(/^data: (.*)$/m.exec(chunk)?.[1] ?? 'null');
      assert.equal(data.type, event, 'each data carries its event name as type');
      return [event, data];
    });
}

describe('the scripted Messages API', () => {
  it('streams a tool call as the API does: tool_use with input_json_delta, then stop_reason tool_use', async () => {
    const res = await post({
      model: 'm',
      max_tokens: 100,
      stream: true,
      tools,
      messages: [{ role: 'user', content: 'hi' }],
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
    const ev = events(await res.text());
    assert.deepEqual(
      ev.map(([e]) => e),
      [
        'message_start',
        'ping',
        'content_block_start',
        'content_block_delta',
        'content_block_delta',
        'content_block_stop',
        'content_block_start',
        'content_block_delta',
        'content_block_delta',
        'content_block_stop',
        'message_delta',
        'message_stop',
      ],
    );
    const start = ev[0]![1].message;
    assert.match(start.id, /^msg_/);
    assert.equal(start.role, 'assistant');
    assert.deepEqual(start.content, []);
    assert.equal(start.stop_reason, null);
    const tool = ev[6]![1].content_block;
    assert.equal(tool.type, 'tool_use');
    assert.deepEqual(tool.input, {});
    const json = ev
      .filter(([e, d]) => e === 'content_block_delta' && d.index === 1)
      .map(([, d]) => (assert.equal(d.delta.type, 'input_json_delta'), d.delta.partial_json))
      .join('');
    assert.deepEqual(JSON.parse(json), { command: 'ls', description: 'run a command' });
    const delta = ev[10]![1];
    assert.equal(delta.delta.stop_reason, 'tool_use');
    assert.ok(delta.usage.output_tokens > 0);
  });

  it('answers without streaming with a whole Message, and moves the script on', async () => {
    const res = await post({
      model: 'm',
      max_tokens: 100,
      tools,
      messages: [{ role: 'user', content: 'hi' }],
    });
    const msg = (await res.json()) as any;
    assert.equal(msg.type, 'message');
    assert.deepEqual(msg.content, [{ type: 'text', text: 'Done.' }]);
    assert.equal(msg.stop_reason, 'end_turn');
    assert.equal(fake.stepsTaken, 2);
  });

  it('answers a side question without tools and leaves the script where it was', async () => {
    const res = await post({ model: 'm', max_tokens: 10, messages: [{ role: 'user', content: 'title?' }] });
    assert.equal(res.status, 200);
    assert.equal(fake.stepsTaken, 2);
  });

  it('refuses what the API refuses, with its error shape', async () => {
    const body = { model: 'm', max_tokens: 1, messages: [] };
    const cases: [Response, number, string][] = [
      [await post(body, { 'x-api-key': 'wrong' }), 401, 'authentication_error'],
      [await post(body, { 'anthropic-version': '' }), 400, 'invalid_request_error'],
      [await post('{not json'), 400, 'invalid_request_error'],
      [await post({ model: 'm', messages: [] }), 400, 'invalid_request_error'],
    ];
    for (const [res, status, type] of cases) {
      assert.equal(res.status, status);
      const err = (await res.json()) as any;
      assert.equal(err.type, 'error');
      assert.equal(err.error.type, type);
    }
    const missing = await fetch(`${fake.url}/v1/complete`, { method: 'POST' });
    assert.equal(missing.status, 404);
  });
});
