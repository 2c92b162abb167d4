import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { sameOrigin } from '../../src/api/auth.js';
import { isHttpUrl } from '../../src/config.js';
import { thopterDetail } from '../../src/dashboard/pages.js';
import { branchUrl, rowView } from '../../src/dashboard/rows.js';
import type { ThopterRecord } from '../../src/thopters/record.js';
import { sendKeysCommands, unescapeOutput } from '../../src/dashboard/tmux-control.js';
import { renderEntry, renderTranscript } from '../../src/dashboard/transcript.js';

describe('the session log renderer', () => {
  it('renders messages, tool calls collapsed, and timestamps', () => {
    const out = renderTranscript(
      [
        JSON.stringify({
          type: 'user',
          message: { role: 'user', content: 'Do <it>' },
          timestamp: '2026-01-01T00:00:00.000Z',
        }),
        JSON.stringify({
          type: 'assistant',
          message: { content: [{ type: 'tool_use', name: 'Read', input: { file_path: '/a/b.ts' } }] },
        }),
      ].join('\n'),
    ).value;
    assert.match(out, /Do &lt;it&gt;/, 'text is escaped');
    assert.match(out, /<time datetime="2026-01-01T00:00:00.000Z">2026-01-01 00:00:00 UTC<\/time>/);
    assert.match(
      out,
      /<details class="tool">\s*<summary><span class="tag">tool<\/span> Read <code>\/a\/b.ts<\/code>/,
    );
  });

  const shapes: Array<[string, string, RegExp]> = [
    [
      'an unknown record type',
      '{"type":"queue-operation","op":"x"}',
      /queue-operation \(shown as recorded\)/,
    ],
    ['a line that is not JSON', '{"type":', /unreadable line/],
    ['a JSON value that is not an object', '42', /value \(shown as recorded\)/],
    [
      'an unknown content block',
      '{"type":"assistant","message":{"content":[{"type":"server_tool_use"}]}}',
      /server_tool_use/,
    ],
    ['a message without content', '{"type":"user","message":{}}', /message \(shown as recorded\)/],
    [
      'a tool error',
      '{"type":"user","message":{"content":[{"type":"tool_result","is_error":true,"content":[{"type":"text","text":"boom"}]}]}}',
      /tool error[\s\S]*boom/,
    ],
    [
      'a script in a message',
      '{"type":"user","message":{"content":"<script>alert(1)</script>"}}',
      /&lt;script&gt;/,
    ],
  ];
  for (const [name, line, expected] of shapes) {
    it(`shows ${name} without failing`, () => {
      const out = renderEntry(line).value;
      assert.match(out, expected);
      assert.doesNotMatch(out, /<script>/);
    });
  }

  it('says so when the transcript is empty', () => {
    assert.match(renderTranscript('\n\n').value, /empty so far/);
  });
});

describe('the terminal bridge', () => {
  it("undoes tmux control mode's octal escapes, byte for byte", () => {
    const escaped = Buffer.from('a\\033[1mb\\015\\012\\134x \xc3\xa9', 'latin1');
    assert.deepEqual(unescapeOutput(escaped), Buffer.from('a\x1b[1mb\r\n\\x é', 'utf8'));
    assert.deepEqual(unescapeOutput(Buffer.from('tail\\03')), Buffer.from('tail\\03'), 'a cut escape stays');
  });

  it('sends keys as hex bytes, so no key name or command can be smuggled in', () => {
    const cmds = sendKeysCommands('%1', Buffer.from('ls; kill-server\r'));
    assert.equal(cmds.length, 1);
    assert.match(cmds[0]!, /^send-keys -t %1 -H( [0-9a-f]{2})+$/);
    assert.equal(sendKeysCommands('%1', Buffer.alloc(600, 0x61)).length, 3, 'long input is split');
  });
});

describe('origins and links', () => {
  it('accepts only the hub itself as an Origin', () => {
    assert.equal(sameOrigin('http://127.0.0.1:8080', '127.0.0.1:8080'), true);
    assert.equal(sameOrigin('https://hub.example.com', 'internal:8080', 'https://hub.example.com/'), true);
    assert.equal(sameOrigin('http://127.0.0.1:9999', '127.0.0.1:8080'), false);
    assert.equal(sameOrigin('null', '127.0.0.1:8080'), false);
    assert.equal(sameOrigin(undefined, '127.0.0.1:8080'), true, 'no Origin: not from another page');
  });

  it('links the work branch on GitHub or GitHub Enterprise', () => {
    assert.equal(
      branchUrl('https://ghe.corp/acme/app/issues/7', 'thopter/7--abc'),
      'https://ghe.corp/acme/app/tree/thopter/7--abc',
    );
    assert.equal(branchUrl(undefined, 'thopter/7--abc'), null);
  });

  it('never renders a stored javascript: or data: issue link as a link', () => {
    const record = (url: string): ThopterRecord => ({
      id: 'thopter-0123456789ab',
      state: 'queued',
      request: {
        id: 'thopter-0123456789ab',
        source: 'api',
        repository: 'acme/app',
        cloneUrl: '/srv/app.git',
        repoName: 'app',
        issue: { number: 7, title: 'Evil', body: '', url, comments: [] },
        gc: 'default',
        prompt: 'default',
        priority: 5,
        requestedBy: 'api',
        createdAt: '2026-01-01T00:00:00.000Z',
      },
      phases: {},
      createdAt: '2026-01-01T00:00:00.000Z',
      updatedAt: '2026-01-01T00:00:00.000Z',
    });
    for (const url of ['javascript:alert(document.cookie)', ' JavaScript:alert(1)', 'data:text/html,x']) {
      const page = thopterDetail(record(url), [], null).value;
      assert.doesNotMatch(page, /href="[^"]*(javascript|data):/i, url);
      assert.match(page, /#7/, 'the issue number is still shown, as text');
      assert.equal(rowView(record(url)).issue.url, null, `${url}: not sent to the main page`);
    }
    const good = 'https://github.com/acme/app/issues/7';
    assert.match(
      thopterDetail(record(good), [], null).value,
      /<a href="https:\/\/github.com\/acme\/app\/issues\/7">#7<\/a>/,
    );
    assert.equal(rowView(record(good)).issue.url, good);
    assert.equal(isHttpUrl('http://'), false);
    assert.equal(isHttpUrl('https://hub.example.com/x y'), false);
  });
});
