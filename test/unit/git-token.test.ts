import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { ThopterTokens } from '../../src/github/app.js';
import { createLogger } from '../../src/log.js';
import { replaceGitToken } from '../../src/processors/git-token.js';
import type { Transport } from '../../src/providers/types.js';

/** A machine holding files in memory; `writable` false makes its writes fail as a lost connection does. */
function machine(files: Map<string, string>, writable = true): Transport {
  return {
    paths: { home: '/home/thopter' },
    isOpen: true,
    exists: async (p: string) => files.has(p),
    readFile: async (p: string) => Buffer.from(files.get(p) ?? ''),
    writeFile: async (p: string, data: string | Buffer) => {
      if (!writable) throw new Error('the connection to the machine closed');
      files.set(p, String(data));
    },
  } as unknown as Transport;
}

function tokens(): ThopterTokens & { revoked: string[] } {
  const revoked: string[] = [];
  return {
    revoked,
    thopterToken: async () => undefined,
    revokeThopterToken: async (token: string) => void revoked.push(token),
  };
}

const log = createLogger('silent');
const FILE = '/home/thopter/.thopter/git-token';

describe('replaceGitToken', () => {
  it('writes the new token and revokes the one it replaces', async () => {
    const files = new Map([[FILE, 'ghs_old\n']]);
    const t = tokens();
    await replaceGitToken(machine(files), t, 'ghs_new', log);
    assert.equal(files.get(FILE), 'ghs_new\n');
    assert.deepEqual(t.revoked, ['ghs_old']);
  });

  it('revokes a new token it could not put on the machine, and keeps the old one working', async () => {
    const files = new Map([[FILE, 'ghs_old\n']]);
    const t = tokens();
    await assert.rejects(replaceGitToken(machine(files, false), t, 'ghs_new', log), /connection .* closed/);
    assert.equal(files.get(FILE), 'ghs_old\n');
    assert.deepEqual(t.revoked, ['ghs_new']);
  });
});
