import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { renderStatus } from '../../src/github/render.js';
import type { ThopterRecord, ThopterState } from '../../src/thopters/record.js';
import type { Usage } from '../../src/usage/tokens.js';
import { aThopter, RECORD_AT as at } from '../helpers/records.js';

const usage: Usage = {
  tokens: { input: 6300, output: 700, cacheRead: 0, cacheCreation: 0 },
  byModel: {
    'claude-opus-5-5': {
      tokens: { input: 6300, output: 700, cacheRead: 0, cacheCreation: 0 },
      messages: 3,
      costUsd: 0.0392,
    },
  },
  costUsd: 0.0392,
  messages: 3,
  updatedAt: at,
};

const thopter = (state: ThopterState, extra: Partial<ThopterRecord> = {}) =>
  aThopter(
    state,
    { usage, ...extra },
    { issue: { number: 7, title: 'Fix it', body: '', comments: [], mentionAuthor: 'alice' } },
  );

const render = (r: ThopterRecord) =>
  renderStatus(r, { instance: 'comment:1', publicUrl: 'https://hub.example.test', queuePosition: null });

describe('the status comment', () => {
  it('says a running agent is stalled, and since when', () => {
    const body = render(
      thopter('running', { stall: { count: 1, stalledSince: '2026-12-01T10:42:13.000Z' } }),
    );
    assert.match(
      body,
      /: \*\*running\*\*, but \*\*stalled\*\*: mid-turn with no progress since 2026-12-01 10:42 UTC/,
    );
    assert.match(
      render(thopter('running', { stall: { count: 1 } })),
      /: \*\*running\*\*: the agent is at work\./,
    );
  });

  it('says what a thopter cost once it ended, and not while it runs', () => {
    const line = /^Used 6\.3k input, 700 output tokens \(claude-opus-5-5\), about \$0\.04\.$/m;
    assert.match(render(thopter('destroyed', { endReason: 'killed by alice' })), line);
    assert.match(render(thopter('failed', { endReason: 'clone failed' })), line);
    assert.doesNotMatch(render(thopter('running')), /^Used /m);
  });
});
