import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { commandLines, findCommand, parseCommand } from '../../src/scanner/command.js';

describe('finding /thopter commands', () => {
  it('finds a command at the start of a line, with a little indent', () => {
    assert.deepEqual(commandLines('Please look.\n/thopter\nthanks'), ['/thopter']);
    assert.deepEqual(commandLines('   /thopter --gc big'), ['/thopter --gc big']);
  });

  it('ignores commands mid-line, indented as code, in quotes, in fenced code, and /thopters', () => {
    const text = [
      'run /thopter please',
      '    /thopter',
      '> /thopter',
      '```',
      '/thopter',
      '```',
      '~~~~',
      '/thopter',
      '~~~~',
      '/thopters are great',
      '/thopterish',
    ].join('\n');
    assert.deepEqual(commandLines(text), []);
  });

  it('keeps a fence open until the same kind of fence closes it', () => {
    assert.deepEqual(commandLines('````\n```\n/thopter\n````\n/thopter -g x'), ['/thopter -g x']);
  });

  it('counts the first command and reports the others', () => {
    const found = findCommand('/thopter --prompt review\nmore text\r\n/thopter kill\n');
    assert.deepEqual(found, {
      line: '/thopter --prompt review',
      following: 'more text',
      command: { kind: 'launch', prompt: 'review' },
      ignored: 1,
    });
    assert.equal(findCommand('no command here'), null);
  });
});

describe('parsing a command line', () => {
  it('reads --gc/-g and --prompt/-p', () => {
    assert.deepEqual(parseCommand('/thopter'), { kind: 'launch' });
    assert.deepEqual(parseCommand('/thopter --gc big -p review'), {
      kind: 'launch',
      gc: 'big',
      prompt: 'review',
    });
    assert.deepEqual(parseCommand('/thopter -g big --prompt=review.md'), {
      kind: 'launch',
      gc: 'big',
      prompt: 'review.md',
    });
  });

  it('reads kill and its alias stop', () => {
    assert.deepEqual(parseCommand('/thopter kill'), { kind: 'kill' });
    assert.deepEqual(parseCommand('/thopter stop'), { kind: 'kill' });
  });

  it('reads kill --discard, and refuses --discard on a launch', () => {
    assert.deepEqual(parseCommand('/thopter kill --discard'), { kind: 'kill', discard: true });
    assert.deepEqual(parseCommand('/thopter stop --discard'), { kind: 'kill', discard: true });
    const launch = parseCommand('/thopter --discard');
    assert.equal(launch.kind, 'invalid');
    assert.match(launch.kind === 'invalid' ? launch.problem : '', /--discard goes only with `kill`/);
  });

  it('says what is wrong with a malformed line', () => {
    const problem = (line: string) => {
      const c = parseCommand(line);
      assert.equal(c.kind, 'invalid', line);
      return c.kind === 'invalid' ? c.problem : '';
    };
    assert.match(problem('/thopter --colour red'), /unknown option --colour/);
    assert.match(problem('/thopter -x'), /unknown option -x/);
    assert.match(problem('/thopter --gc'), /--gc needs a name/);
    assert.match(problem('/thopter --gc a --gc b'), /more than once/);
    assert.match(problem('/thopter --prompt ../../etc/passwd'), /not a valid name/);
    assert.match(problem('/thopter please'), /unexpected `please`/);
    assert.match(problem('/thopter kill --gc x'), /takes no options/);
  });
});

describe('tell and continue', () => {
  it('carry the rest of the line and the lines after it, up to the next command', () => {
    const found = findCommand(
      'Thanks.\n/thopter tell use `fs/promises`\n\n```js\nx = 1\n```\nmore\n/thopter kill\n',
    );
    assert.deepEqual(found?.command, { kind: 'tell', text: 'use `fs/promises`\n\n```js\nx = 1\n```\nmore' });
    assert.equal(found?.ignored, 1);
  });
  it('take --id before the text', () => {
    assert.deepEqual(parseCommand('/thopter tell --id thopter-0123abcd4567 go on'), {
      kind: 'tell',
      text: 'go on',
      id: 'thopter-0123abcd4567',
    });
    assert.deepEqual(parseCommand('/thopter continue --id=thopter-0123abcd4567'), {
      kind: 'continue',
      id: 'thopter-0123abcd4567',
    });
  });
  it('continue without text; tell without text is refused with what to write', () => {
    assert.deepEqual(findCommand('/thopter continue')?.command, { kind: 'continue' });
    assert.deepEqual(findCommand('/thopter continue\nand fix the docs too')?.command, {
      kind: 'continue',
      text: 'and fix the docs too',
    });
    const bare = findCommand('/thopter tell\n\n')?.command;
    assert.equal(bare?.kind, 'invalid');
    assert.match((bare as { problem: string }).problem, /needs the message/);
    const badId = parseCommand('/thopter tell --id ../x hi');
    assert.equal(badId.kind, 'invalid');
  });
});
