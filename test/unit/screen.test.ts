import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { inputBox } from '../../src/status/screen.js';

/** The bottom of Claude Code 2.1.328's screen (200 columns), as tmux captured it. */
const screen = (...box: string[]) =>
  [
    '❯ say hi',
    '● First answer.',
    '✻ Worked for 0s · done 5:35 PM',
    `${' '.repeat(180)}◐ medium · /effort`,
    '─'.repeat(200),
    ...box,
    '─'.repeat(200),
    '  ⏵⏵ bypass permissions on (shift+tab to cycle)',
    '',
  ].join('\n');

describe("Claude Code's input box", () => {
  it('reads an empty box, a short paste left in it, and the placeholder of a long one', () => {
    assert.equal(inputBox(screen('❯ ')), '');
    assert.equal(
      inputBox(screen('❯ line one of a short message', '  line two')),
      'line one of a short message\n  line two',
    );
    assert.equal(inputBox(screen('❯ [Pasted text #1 +39 lines]')), '[Pasted text #1 +39 lines]');
  });

  it('reads no box where the screen shows none (a shell, a dialog in its place)', () => {
    assert.equal(inputBox('root@vm:~/work# claude\nbash: claude: command not found\n'), undefined);
    assert.equal(inputBox(screen(' Do you want to proceed?', ' ❯ 1. Yes', '   2. No')), undefined);
  });
});
