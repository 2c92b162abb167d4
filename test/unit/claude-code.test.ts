import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { it } from 'node:test';
import { PROJECT_DIR } from '../../src/config.js';

const read = (file: string) => readFileSync(path.join(PROJECT_DIR, file), 'utf8');

it('pins one Claude Code version: the one the tests run, the thopter image installs and hub.sh installs', () => {
  const pkg = JSON.parse(read('package.json'));
  const tested: string = pkg.devDependencies['@anthropic-ai/claude-code'];
  assert.match(tested, /^\d+\.\d+\.\d+$/, 'an exact version, not a range');
  assert.equal(
    JSON.parse(read('package-lock.json')).packages['node_modules/@anthropic-ai/claude-code'].version,
    tested,
  );
  assert.match(
    read('thopter/Dockerfile'),
    new RegExp(`^ARG CLAUDE_CODE_VERSION=${tested.replaceAll('.', '\\.')}$`, 'm'),
  );
  // hub.sh installs what package.json names, rather than a version of its own.
  assert.match(read('scripts/lib.sh'), /devDependencies\["@anthropic-ai\/claude-code"\]/);
  assert.match(read('scripts/hub.sh'), /^install_claude$/m);
});
