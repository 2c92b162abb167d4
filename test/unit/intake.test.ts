import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, realpathSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { it } from 'node:test';
import { ThopterError } from '../../src/errors.js';
import { cloneSource, thopterIdFor } from '../../src/scanner/intake.js';

const NO_PATHS = { provider: 'local' as const, roots: [] as string[] };

it('derives where to clone from and the folder name', () => {
  assert.deepEqual(cloneSource('acme/widget', NO_PATHS), {
    cloneUrl: 'https://github.com/acme/widget.git',
    repoName: 'widget',
  });
  assert.deepEqual(cloneSource('https://git.example.com/acme/widget.git', NO_PATHS), {
    cloneUrl: 'https://git.example.com/acme/widget.git',
    repoName: 'widget',
  });
  assert.deepEqual(cloneSource('git@github.com:acme/widget.git', NO_PATHS), {
    cloneUrl: 'git@github.com:acme/widget.git',
    repoName: 'widget',
  });
  assert.equal(cloneSource('ssh://git@host/acme/widget.git', NO_PATHS).repoName, 'widget');
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
      () => cloneSource(bad, NO_PATHS),
      (err: unknown) => err instanceof ThopterError && err.code === 'bad-input',
      bad,
    );
  }
});

it('clones a local path only under THOPTER_LOCAL_REPOSITORIES, after resolving .. and symlinks', () => {
  const dir = realpathSync(mkdtempSync(path.join(tmpdir(), 'thl-')));
  const allowed = path.join(dir, 'allowed');
  const repo = path.join(allowed, 'widget.git');
  const secret = path.join(dir, 'secret.git');
  mkdirSync(repo, { recursive: true });
  mkdirSync(secret);
  symlinkSync(secret, path.join(allowed, 'link.git'));
  const local = { provider: 'local' as const, roots: [allowed] };

  assert.deepEqual(cloneSource(repo, local), { cloneUrl: repo, repoName: 'widget' });
  assert.deepEqual(cloneSource(pathToFileURL(repo).href, local), {
    cloneUrl: pathToFileURL(repo).href,
    repoName: 'widget',
  });
  const refusal = (given: string, l: Parameters<typeof cloneSource>[1] = local) => {
    try {
      cloneSource(given, l);
    } catch (err) {
      assert.ok(err instanceof ThopterError && err.code === 'bad-input', given);
      return err.message.replace(given, '<given>');
    }
    assert.fail(`${given} was accepted`);
  };
  const outside = refusal(secret);
  assert.match(outside, /not a repository under THOPTER_LOCAL_REPOSITORIES: add its folder there/);
  // Neither a way out nor a missing path tells anything else.
  for (const escape of [
    path.join(allowed, '..', 'secret.git'),
    path.join(allowed, 'link.git'),
    pathToFileURL(secret).href,
    `${allowed}-sibling/x.git`,
    path.join(dir, 'missing.git'),
    path.join(allowed, 'missing.git'),
    'file://otherhost/srv/x.git',
  ]) {
    assert.equal(refusal(escape), outside, escape);
  }
  assert.match(
    refusal(repo, NO_PATHS),
    /local paths are off: list the folders .* in THOPTER_LOCAL_REPOSITORIES/,
  );
  assert.equal(refusal(path.join(dir, 'missing.git'), NO_PATHS), refusal(repo, NO_PATHS));
  assert.match(
    refusal(repo, { provider: 'fly', roots: [allowed] }),
    /cannot be cloned with THOPTER_PROVIDER=fly/,
  );
});

it('makes thopter ids BullMQ accepts, stable for one key', () => {
  assert.match(thopterIdFor(), /^thopter-[a-f0-9]{12}$/);
  assert.equal(thopterIdFor('api:x'), thopterIdFor('api:x'));
  assert.notEqual(thopterIdFor('api:x'), thopterIdFor('api:y'));
  assert.notEqual(thopterIdFor(), thopterIdFor());
});
