import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { issueMarkdown } from '../../src/processors/phases/write-context.js';
import { agentWaits, continueTarget, threadForAgent } from '../../src/scanner/continue.js';
import type { GitHubComment } from '../../src/github/schemas.js';
import type { ThopterRecord, ThopterState } from '../../src/thopters/record.js';
import { aThopter, RECORD_AT } from '../helpers/records.js';

const REPO = 'acme/widget';

function thopter(
  id: string,
  state: ThopterState,
  opts: { issue?: number; branch?: string; repository?: string } = {},
): ThopterRecord {
  return aThopter(
    state,
    {
      id,
      ...(opts.branch
        ? {
            machine: {
              id: 'ab12',
              provider: 'local',
              workBranch: opts.branch,
              state: 'created',
              createdAt: RECORD_AT,
            },
          }
        : {}),
      startedAt: '2026-12-01T10:00:05.000Z',
    },
    {
      repository: opts.repository ?? REPO,
      cloneUrl: '/srv/git/widget.git',
      issue: { number: opts.issue ?? 7, title: 'Fix it', body: 'Please.', comments: [] },
    },
  );
}

describe('which thopter a continue acts on', () => {
  // Newest first, as the store lists them.
  const thopters = [
    thopter('thopter-other', 'destroyed', { issue: 8, branch: 'thopter/8--aa' }),
    thopter('thopter-nomachine', 'failed'),
    thopter('thopter-newer', 'destroyed', { branch: 'thopter/7--bb' }),
    thopter('thopter-older', 'failed', { branch: 'thopter/7--cc' }),
    thopter('thopter-elsewhere', 'destroyed', { repository: 'acme/gadget', branch: 'thopter/7--dd' }),
  ];

  it('takes the newest ended one of the issue that had a work branch', () => {
    const t = continueTarget(thopters, REPO, 7);
    assert.equal(t.kind, 'ended');
    assert.equal(t.kind === 'ended' && t.thopter.id, 'thopter-newer');
  });

  it('takes the one --id names, if it is on the issue and had a work branch', () => {
    const t = continueTarget(thopters, REPO, 7, 'thopter-older');
    assert.equal(t.kind === 'ended' && t.thopter.id, 'thopter-older');
    assert.deepEqual(continueTarget(thopters, REPO, 7, 'thopter-other'), {
      kind: 'none',
      why: 'there is no thopter `thopter-other` on this issue',
    });
    assert.match(
      (continueTarget(thopters, REPO, 7, 'thopter-nomachine') as { why: string }).why,
      /ended before it had a machine/,
    );
  });

  it('finds the live thopter that already carries on the branch --id names', () => {
    const carrying = thopter('thopter-carrying', 'provisioning');
    carrying.request.continues = {
      thopterId: 'thopter-older',
      workBranch: 'thopter/7--cc',
      since: '2026-12-01T10:00:05.000Z',
    };
    const t = continueTarget([carrying, ...thopters], REPO, 7, 'thopter-older');
    assert.equal(t.kind === 'live' && t.thopter.id, 'thopter-carrying');
    // Another branch's ended thopter may still be continued beside it.
    const other = continueTarget([carrying, ...thopters], REPO, 7, 'thopter-newer');
    assert.equal(other.kind === 'ended' && other.thopter.id, 'thopter-newer');
  });

  it('finds a live thopter first: a second agent on the branch would fight the first', () => {
    const t = continueTarget(
      [thopter('thopter-live', 'running', { branch: 'thopter/7--ee' }), ...thopters],
      REPO,
      7,
    );
    assert.equal(t.kind === 'live' && t.thopter.id, 'thopter-live');
  });

  it('says why there is nothing to continue', () => {
    assert.deepEqual(continueTarget(thopters, REPO, 9), {
      kind: 'none',
      why: 'no thopter has run on this issue, or none since THOPTER_RETENTION (the hub forgets thopters that ended longer ago)',
    });
    assert.deepEqual(continueTarget([thopter('thopter-x', 'failed')], REPO, 7), {
      kind: 'none',
      why: 'no thopter of this issue got as far as a machine and a work branch',
    });
  });
});

describe('whether a live agent waits for an answer', () => {
  const running = (
    session: Partial<NonNullable<ThopterRecord['session']>>,
    turns?: ThopterRecord['turns'],
  ) => ({
    ...thopter('thopter-live', 'running', { branch: 'thopter/7--ee' }),
    session: {
      state: 'active' as const,
      agentRunning: true,
      lastActivity: '2026-12-01T10:05:00.000Z',
      screen: '',
      updatedAt: '2026-12-01T10:06:00.000Z',
      source: 'hub' as const,
      ...session,
    },
    ...(turns ? { turns } : {}),
  });

  it('waits when its last turn ended after it last took a prompt, however the screen moved since', () => {
    const turns = (lastStartedAt: string) => ({
      count: 1,
      lastEndedAt: '2026-12-01T10:01:00.000Z',
      lastStartedAt,
    });
    // Claude Code's footer notices moved the screen four minutes after the turn ended.
    assert.equal(agentWaits(running({ turns: turns('2026-12-01T10:00:00.000Z') })), true);
    assert.equal(agentWaits(running({ turns: turns('2026-12-01T10:02:00.000Z') })), false);
    // An interrupted turn runs no Stop hook: an idle session waits all the same.
    assert.equal(agentWaits(running({ state: 'idle', turns: turns('2026-12-01T10:02:00.000Z') })), true);
  });

  it('without prompt marks, waits when its session is idle, or its last turn ended and the screen did not move on', () => {
    assert.equal(agentWaits(running({ state: 'idle' })), true);
    assert.equal(agentWaits(running({}, { count: 1, lastEndedAt: '2026-12-01T10:04:59.000Z' })), true);
  });

  it('is at work when the screen moved on after its last turn, or no turn ended yet', () => {
    assert.equal(agentWaits(running({}, { count: 1, lastEndedAt: '2026-12-01T10:01:00.000Z' })), false);
    assert.equal(agentWaits(running({})), false);
  });

  it('is told nothing when its agent exited or the thopter is being torn down', () => {
    assert.equal(agentWaits(running({ state: 'idle', agentRunning: false })), false);
    const doomed = {
      ...running({ state: 'idle' }),
      destroyRequested: { reason: 'kill', at: '2026-12-01T10:06:00Z' },
    };
    assert.equal(agentWaits(doomed), false);
  });
});

describe("the continuing agent's issue.md", () => {
  const comment = (id: number, login: string, body: string, at: string): GitHubComment => ({
    id,
    body,
    user: { login, id, type: 'User' },
    created_at: at,
    updated_at: at,
  });

  it('leaves out only the hub’s own acknowledgements and replies, keeping its reports', async () => {
    const comments = [
      comment(1, 'alice', '/thopter', '2026-12-01T10:00:00Z'),
      comment(2, 'thopter-hub', '<!-- thopter-ack:comment:1 -->\n**Thopter**', '2026-12-01T10:00:01Z'),
      comment(3, 'thopter-hub', '<!-- thopter-report:thopter-a:turn-1 -->\nI did it', '2026-12-01T10:01:00Z'),
      comment(4, 'mallory', '<!-- thopter-reply:abc -->\nhidden?', '2026-12-01T10:02:00Z'),
      comment(5, 'thopter-hub', '<!-- thopter-reply:def -->\n@alice: destroying', '2026-12-01T10:03:00Z'),
    ];
    const kept = await threadForAgent(comments, async (c) => c.user?.login === 'thopter-hub');
    assert.deepEqual(
      kept.map((c) => c.id),
      [1, 3, 4],
    );
  });

  it('marks the comments after the continued thopter started as new, and ends with what is asked', () => {
    const t = thopter('thopter-b', 'queued');
    t.request.issue.comments = [
      { author: 'alice', body: '/thopter', createdAt: '2026-12-01T10:00:00Z' },
      { author: 'thopter-hub', body: 'I did it', createdAt: '2026-12-01T10:01:00Z' },
      { author: 'alice', body: '/thopter continue also X', createdAt: '2026-12-01T10:09:00Z' },
    ];
    t.request.continues = {
      thopterId: 'thopter-a',
      workBranch: 'thopter/7--cc',
      since: '2026-12-01T10:00:05.000Z',
      text: 'also X',
    };
    const md = issueMarkdown(t);
    assert.match(
      md,
      /### alice — 2026-12-01T10:00:00Z\n\n\/thopter\n\n## New since the last run \(thopter-a started 2026-12-01T10:00:05\.000Z\)\n\n### thopter-hub — 2026-12-01T10:01:00Z\n\nI did it\n/,
    );
    assert.match(md, /## What is asked now\n\nalso X\n$/);
    assert.equal(md.match(/## New since the last run/g)?.length, 1);
  });

  it('has no such marks for a thopter that continues nothing', () => {
    const t = thopter('thopter-a', 'queued');
    t.request.issue.comments = [{ author: 'alice', body: '/thopter', createdAt: '2026-12-01T10:00:00Z' }];
    assert.doesNotMatch(issueMarkdown(t), /New since the last run|What is asked now/);
  });
});
