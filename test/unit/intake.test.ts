import assert from 'node:assert/strict';
import { it } from 'node:test';
import { ThopterError } from '../../src/errors.js';
import { cloneSource, thopterIdFor } from '../../src/scanner/intake.js';

it('derives where to clone from and the folder name', () => {
  assert.deepEqual(cloneSource('acme/widget'), {
    cloneUrl: 'https://github.com/acme/widget.git',
    repoName: 'widget',
  });
  assert.deepEqual(cloneSource('https://git.example.com/acme/widget.git'), {
    cloneUrl: 'https://git.example.com/acme/widget.git',
    repoName: 'widget',
  });
  assert.deepEqual(cloneSource('git@github.com:acme/widget.git'), {
    cloneUrl: 'git@github.com:acme/widget.git',
    repoName: 'widget',
  });
  assert.deepEqual(cloneSource('/tmp'), { cloneUrl: '/tmp', repoName: 'tmp' });
  assert.equal(cloneSource('ssh://git@host/acme/widget.git').repoName, 'widget');
});

it('refuses what it cannot clone safely, saying what to give', () => {
  for (const bad of [
    '../../etc',
    'acme',
    '--upload-pack=evil',
    'relative/path/x',
    'https://me:token@github.com/a/b.git',
    'https://ghp_token@github.com/a/b.git',
    'ssh://git:secret@host/a/b.git',
    'https://host/a/b.git?access_token=x',
  ]) {
    assert.throws(
      () => cloneSource(bad),
      (err: unknown) => err instanceof ThopterError && err.code === 'bad-input',
      bad,
    );
  }
});

it('makes thopter ids BullMQ accepts, stable for one key', () => {
  assert.match(thopterIdFor(), /^thopter-[a-f0-9]{12}$/);
  assert.equal(thopterIdFor('api:x'), thopterIdFor('api:x'));
  assert.notEqual(thopterIdFor('api:x'), thopterIdFor('api:y'));
  assert.notEqual(thopterIdFor(), thopterIdFor());
});
