import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config.js';
import { renderPullRequestBody } from '../../src/github/render.js';
import type { ThopterRecord } from '../../src/thopters/record.js';

const record = (number?: number): ThopterRecord => ({
  id: 'thopter-0123456789ab',
  state: 'running',
  request: {
    id: 'thopter-0123456789ab',
    source: 'github',
    repository: 'acme/widget',
    cloneUrl: '/srv/git/widget.git',
    repoName: 'widget',
    issue: { number, title: 'Add a greeting', body: 'We need one.', comments: [] },
    gc: 'default',
    prompt: 'default',
    priority: 100,
    requestedBy: 'alice',
    createdAt: '2026-01-01T00:00:00.000Z',
  },
  phases: {},
  createdAt: '2026-01-01T00:00:00.000Z',
  updatedAt: '2026-01-01T00:00:00.000Z',
});

const PUBLIC = 'https://hub.example.test';

describe("a pull request's body", () => {
  it('closes the issue and links the thopter on the dashboard', () => {
    const body = renderPullRequestBody(record(42), { publicUrl: PUBLIC, closeIssue: true });
    assert.match(body, /^Closes #42$/m);
    assert.ok(body.includes(`(${PUBLIC}/thopters/thopter-0123456789ab)`), body);
    assert.ok(body.includes('<!-- thopter-pr:thopter-0123456789ab -->'));
  });

  it('only refers to the issue when the repository says closeIssue: false', () => {
    const body = renderPullRequestBody(record(42), { publicUrl: PUBLIC, closeIssue: false });
    assert.match(body, /^Refs #42$/m);
    assert.doesNotMatch(body, /Closes/);
  });

  it('carries what the agent said it did, and says nothing of it when there is nothing', () => {
    const said = renderPullRequestBody(record(42), {
      publicUrl: PUBLIC,
      closeIssue: true,
      agentMessage: '  Added a greeting to the home page.\n',
    });
    assert.match(said, /What the agent says it did\*\*\n\nAdded a greeting to the home page\.\n/);
    for (const agentMessage of [undefined, '', '  \n']) {
      const silent = renderPullRequestBody(record(42), { publicUrl: PUBLIC, closeIssue: true, agentMessage });
      assert.doesNotMatch(silent, /agent says/i);
      assert.doesNotMatch(silent, /\n\n\n/, 'no empty section left behind');
    }
  });

  it('names no issue for a launch without one', () => {
    const body = renderPullRequestBody(record(undefined), { publicUrl: PUBLIC, closeIssue: true });
    assert.doesNotMatch(body, /Closes|Refs|#undefined/);
    assert.ok(body.includes(`${PUBLIC}/thopters/thopter-0123456789ab`));
  });
});

describe('pull request settings', () => {
  it('opens drafts by default; THOPTER_PULL_REQUEST and a repository\'s "pullRequest" choose', () => {
    assert.equal(loadConfig({}).pullRequest, 'draft');
    assert.equal(loadConfig({ THOPTER_PULL_REQUEST: 'off' }).pullRequest, 'off');
    const c = loadConfig({
      GITHUB_INTEGRATION_JSON: JSON.stringify({
        repositories: { 'acme/widget': { issuesPAT: 'x', pullRequest: 'ready', closeIssue: false } },
      }),
    });
    assert.equal(c.repositories['acme/widget']?.pullRequest, 'ready');
    assert.equal(c.repositories['acme/widget']?.closeIssue, false);
  });

  it('names a bad value and the ones it takes', () => {
    assert.throws(
      () => loadConfig({ THOPTER_PULL_REQUEST: 'yes' }),
      (e: ConfigError) => /THOPTER_PULL_REQUEST must be one of draft, ready, off/.test(e.message),
    );
    assert.throws(
      () =>
        loadConfig({
          GITHUB_INTEGRATION_JSON:
            '{"repositories": {"acme/widget": {"issuesPAT": "ghp_SECRET", "pullRequest": "sometimes"}}}',
        }),
      (e: ConfigError) =>
        /GITHUB_INTEGRATION_JSON .*acme\/widget\.pullRequest/.test(e.message) &&
        !e.message.includes('ghp_SECRET'),
    );
  });
});
