import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadConfig } from '../../src/config.js';
import { thopterDetail } from '../../src/dashboard/pages.js';
import { rowView } from '../../src/dashboard/rows.js';
import { renderReport } from '../../src/github/report.js';
import { lastProgress, midTurn, settledScreen, watchScreen } from '../../src/status/stall.js';
import type { ThopterRecord } from '../../src/thopters/record.js';

const line = (type: string, content: unknown, timestamp: string) =>
  JSON.stringify({ type, timestamp, message: { role: type, content } });

const PROMPT = line('user', 'read ./prompt.md for your instructions', '2026-01-01T10:00:00.000Z');
const TOOL_CALL = line(
  'assistant',
  [{ type: 'tool_use', id: 'toolu_1', name: 'Bash', input: { command: 'sleep 9999' } }],
  '2026-01-01T10:00:05.000Z',
);
const TOOL_RESULT = line(
  'user',
  [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'ok' }],
  '2026-01-01T10:00:06.000Z',
);
const ANSWER = line('assistant', [{ type: 'text', text: 'Done.' }], '2026-01-01T10:00:09.000Z');
const SYSTEM = JSON.stringify({
  type: 'system',
  subtype: 'stop_hook_summary',
  timestamp: '2026-01-01T10:00:10Z',
});
// Claude Code 2.1 also writes each request it sends to the model before the answer, large entries
// of other kinds in between, and the turn's end after the answer.
const REQUEST = JSON.stringify({ type: 'api-request', timestamp: '2026-01-01T10:00:06.500Z' });
const OTHER = JSON.stringify({ type: 'attachment', timestamp: '2026-01-01T10:00:06.400Z' });
const TURN_END = JSON.stringify({
  type: 'system',
  subtype: 'turn_duration',
  timestamp: '2026-01-01T10:00:09.1Z',
});

describe('a stall: mid-turn, with nothing moving', () => {
  it('is mid-turn while the model has not answered the prompt or a tool result', () => {
    assert.equal(midTurn(PROMPT + '\n'), true);
    assert.equal(midTurn([PROMPT, TOOL_CALL, TOOL_RESULT].join('\n') + '\n'), true);
    assert.equal(midTurn([PROMPT, TOOL_CALL, TOOL_RESULT, OTHER, REQUEST, OTHER].join('\n') + '\n'), true);
  });

  it('is mid-turn while a tool the model called runs', () => {
    assert.equal(midTurn([PROMPT, TOOL_CALL].join('\n') + '\n'), true);
  });

  it('is at rest once the model answered with text, whatever system lines follow', () => {
    assert.equal(midTurn([PROMPT, TOOL_CALL, TOOL_RESULT, ANSWER, SYSTEM].join('\n') + '\n'), false);
    assert.equal(midTurn([PROMPT, REQUEST, ANSWER, TURN_END, OTHER].join('\n') + '\n'), false);
    assert.equal(midTurn([PROMPT, REQUEST, OTHER, TURN_END].join('\n') + '\n'), false);
  });

  it('is at rest when the Stop hook ended a turn after the last entry, or the request was interrupted', () => {
    assert.equal(midTurn([PROMPT, TOOL_CALL].join('\n'), '2026-01-01T10:00:07.000Z'), false);
    const interrupted = line(
      'user',
      [{ type: 'text', text: '[Request interrupted by user]' }],
      '2026-01-01T10:00:07.000Z',
    );
    assert.equal(midTurn([PROMPT, TOOL_CALL, interrupted].join('\n')), false);
  });

  it('skips a torn first line (a tail cut mid-line) and knows nothing from an empty transcript', () => {
    assert.equal(midTurn('e":"x"}\n' + PROMPT + '\n'), true);
    assert.equal(midTurn(''), false);
  });

  it("settles Claude Code's spinner and counters, but not what the agent wrote", () => {
    const at = (s: number, glyph = '✶') =>
      `❯ say hi\n${glyph} Gusting… (${s}s · ↓ 12 tokens)\n──\n❯ \n  ⏵⏵ bypass permissions on · esc to interrupt`;
    assert.equal(settledScreen(at(23)), settledScreen(at(25, '*')));
    // A notice that comes and goes below the spinner, or by the input box, is not progress.
    const notice = at(27).replace('──\n', "  tmux focus-events off · add 'set -g focus-events on'\n──\n");
    assert.equal(settledScreen(notice), settledScreen(at(23)));
    const box = '─'.repeat(40);
    const atPrompt = (footer: string) => `● Done.\n\n${box}\n❯ \n${box}\n  ${footer}`;
    assert.equal(
      settledScreen(atPrompt('⏵⏵ bypass permissions on')),
      settledScreen(atPrompt('new version!')),
    );
    assert.notEqual(
      settledScreen(atPrompt('x')),
      settledScreen(atPrompt('x').replace('Done.', 'Done, and more.')),
    );
    assert.notEqual(settledScreen('❯ say hi\nDone.'), settledScreen('❯ say hi\nDone. Now tests.'));
  });

  it('keeps the time of the last change of the settled screen across looks', () => {
    const t0 = new Date('2026-01-01T10:00:00Z');
    const first = watchScreen(undefined, '✶ Gusting… (1s)', t0);
    const later = watchScreen(first, '✻ Gusting… (61s)', new Date('2026-01-01T10:01:00Z'));
    assert.equal(later.screenSince, t0.toISOString());
    const moved = watchScreen(later, '⏺ Bash(ls)', new Date('2026-01-01T10:02:00Z'));
    assert.equal(moved.screenSince, '2026-01-01T10:02:00.000Z');
    // The transcript's growth counts as progress too.
    assert.equal(lastProgress(later, Date.parse('2026-01-01T10:00:30Z')), Date.parse('2026-01-01T10:00:30Z'));
    assert.equal(lastProgress(later, undefined), t0.getTime());
  });

  it('reads THOPTER_STALL_AFTER as a duration, 15 min by default, 0 = off, and names a bad one', () => {
    assert.equal(loadConfig({}).stallAfterMs, 15 * 60_000);
    assert.equal(loadConfig({ THOPTER_STALL_AFTER: '0' }).stallAfterMs, undefined);
    assert.equal(loadConfig({ THOPTER_STALL_AFTER: '90s' }).stallAfterMs, 90_000);
    assert.throws(() => loadConfig({ THOPTER_STALL_AFTER: 'soon' }), /THOPTER_STALL_AFTER.*duration/s);
  });

  it('reports a stall with since when and the screen, fenced whatever it holds', () => {
    const record = {
      id: 'thopter-1',
      state: 'running',
      request: { issue: { url: 'https://github.com/a/b/issues/1' } },
      phases: {},
      session: { screen: 'run ```x```\n✶ Gusting… (900s)\n\n\n' },
      stall: { count: 1, stalledSince: '2026-01-01T10:00:00.000Z' },
      runningAt: '2026-01-01T09:59:00.000Z',
    } as unknown as ThopterRecord;
    const body = renderReport(record, {
      key: 'stall-1',
      publicUrl: 'https://hub.test',
      lastMessage: 'old words',
      now: new Date('2026-01-01T10:20:00Z'),
    });
    assert.match(body, /^<!-- thopter-report:thopter-1:stall-1 -->$/m);
    assert.match(
      body,
      /\*\*seems stalled\*\*: it is mid-turn and has made no progress since 2026-01-01T10:00:00\.000Z/,
    );
    assert.match(body, /^````text\nrun ```x```\n✶ Gusting… \(900s\)\n````$/m);
    assert.doesNotMatch(body, /old words/);
  });

  it('shows a stalled thopter as stalled on the dashboard, and an ended one as ended', () => {
    const record = (state: ThopterRecord['state']): ThopterRecord => ({
      id: 'thopter-0123456789ab',
      state,
      request: {
        id: 'thopter-0123456789ab',
        source: 'api',
        repository: 'acme/app',
        cloneUrl: '/srv/app.git',
        repoName: 'app',
        issue: { number: 7, title: 'Fix it', body: '', comments: [] },
        gc: 'default',
        prompt: 'default',
        priority: 5,
        requestedBy: 'api',
        createdAt: '2026-01-01T00:00:00.000Z',
      },
      phases: {},
      session: {
        state: 'active',
        agentRunning: true,
        lastActivity: '2026-01-01T10:00:00.000Z',
        screen: '✶ Gusting… (900s)',
        updatedAt: '2026-01-01T10:20:00.000Z',
        source: 'hub',
      },
      stall: { count: 1, stalledSince: '2026-01-01T10:00:00.000Z' },
      createdAt: '2026-01-01T00:00:00.000Z',
      updatedAt: '2026-01-01T00:00:00.000Z',
    });
    const row = rowView(record('running'));
    assert.equal(row.condition, 'stalled');
    assert.equal(row.stalledSince, '2026-01-01T10:00:00.000Z');
    const page = thopterDetail(record('running'), [], null).value;
    assert.match(page, /<span class="badge stalled">stalled<\/span>/);
    assert.match(page, /<dt>Stalled<\/dt>/);
    const ended = rowView(record('destroyed'));
    assert.equal(ended.condition, 'destroyed');
    assert.equal(ended.stalledSince, null);
    assert.doesNotMatch(thopterDetail(record('destroyed'), [], null).value, /<dt>Stalled<\/dt>/);
  });
});
