import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { it } from 'node:test';
import { Prompts, renderTemplate } from '../../src/prompts.js';

const dir = mkdtempSync(path.join(tmpdir(), 'prompts-'));
writeFileSync(path.join(dir, 'default.md'), 'Work on {{workBranch}} in {{ repoName }}; keep {{unknown}}.');
writeFileSync(path.join(dir, 'review.md'), 'Review #{{issueNumber}}');
writeFileSync(path.join(dir, 'notes.txt'), 'not a prompt');
const prompts = new Prompts(dir);

it('lists the .md files of the prompts folder', async () => {
  assert.deepEqual(await prompts.names(), ['default', 'review']);
});

it('resolves a name only from that listing, never as a path', async () => {
  assert.equal(await prompts.resolve('review'), 'review');
  assert.equal(await prompts.resolve('review.md'), 'review');
  for (const bad of ['../review', '/etc/passwd', 'notes.txt', 'notes', '..', '', 'default/../review']) {
    assert.equal(await prompts.resolve(bad), null, bad);
  }
});

it("fills in the seed's variables and leaves anything else as written", async () => {
  const vars = {
    repository: 'acme/widget',
    repoName: 'widget',
    issueNumber: '42',
    workBranch: 'thopter/42--ab12',
    machineId: 'ab12',
  };
  assert.equal(
    await prompts.render('default', vars),
    'Work on thopter/42--ab12 in widget; keep {{unknown}}.',
  );
  assert.equal(renderTemplate('{{constructor}}{{issueNumber}}', vars), '{{constructor}}42');
});
