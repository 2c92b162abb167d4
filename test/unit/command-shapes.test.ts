import assert from 'node:assert/strict';
import { it } from 'node:test';
import { findCommand } from '../../src/scanner/command.js';

/** [comment as written, what the hub must make of it: null (no command), or the command and how many were ignored]. */
const SHAPES: Array<
  [string, null | { kind: string; gc?: string; prompt?: string; problem?: RegExp; ignored?: number }]
> = [
  ['/thopter', { kind: 'launch' }],
  ['/thopter ', { kind: 'launch' }],
  ['/thopter\t', { kind: 'launch' }],
  ['  /thopter', { kind: 'launch' }],
  ['   /thopter', { kind: 'launch' }],
  ['    /thopter', null], // indented code
  ['\t/thopter', null], // a tab indents code too
  ['Please\n/thopter', { kind: 'launch' }],
  ['Please\r\n/thopter\r\nthanks', { kind: 'launch' }],
  ['/thopter\r\n', { kind: 'launch' }],
  ['please /thopter', null],
  ['`/thopter`', null],
  ['> /thopter', null],
  ['>/thopter', null],
  ['> > /thopter', null],
  ['```\n/thopter\n```', null],
  ['```sh\n/thopter\n```', null],
  ['~~~\n/thopter\n~~~', null],
  ['```\n/thopter', null], // an unclosed fence runs to the end
  ['````\n```\n/thopter\n````', null],
  ['```\ncode\n```\n/thopter', { kind: 'launch' }],
  ['/thopters', null],
  ['/thopterbot', null],
  ['/Thopter', null],
  ['/THOPTER', null],
  ['/thopter-go', null],
  ['//thopter', null],
  ['\\/thopter', null],
  ['/thopter --gc big', { kind: 'launch', gc: 'big' }],
  ['/thopter -g big', { kind: 'launch', gc: 'big' }],
  ['/thopter --gc=big', { kind: 'launch', gc: 'big' }],
  ['/thopter --prompt review', { kind: 'launch', prompt: 'review' }],
  ['/thopter -p review -g big', { kind: 'launch', gc: 'big', prompt: 'review' }],
  ['/thopter   --gc    big   ', { kind: 'launch', gc: 'big' }],
  ['/thopter kill', { kind: 'kill' }],
  ['/thopter stop', { kind: 'kill' }],
  ['/thopter kill now', { kind: 'invalid', problem: /unexpected `kill now`/ }],
  ['/thopter KILL', { kind: 'invalid', problem: /unexpected `KILL`/ }],
  ['/thopter --gc', { kind: 'invalid', problem: /--gc needs a name/ }],
  ['/thopter -g', { kind: 'invalid', problem: /--gc needs a name/ }],
  ['/thopter --gc a --gc b', { kind: 'invalid', problem: /more than once/ }],
  ['/thopter --gc ../../root', { kind: 'invalid', problem: /not a valid name/ }],
  ['/thopter --prompt /etc/passwd', { kind: 'invalid', problem: /not a valid name/ }],
  ['/thopter --gc 🚁', { kind: 'invalid', problem: /not a valid name/ }],
  ['/thopter --verbose', { kind: 'invalid', problem: /unknown option --verbose/ }],
  ['/thopter -x', { kind: 'invalid', problem: /unknown option -x/ }],
  ['/thopter please fix', { kind: 'invalid', problem: /unexpected `please fix`/ }],
  ['/thopter 🚁', { kind: 'invalid', problem: /unexpected `🚁`/ }],
  ['Ünïcödé text — then\n/thopter', { kind: 'launch' }],
  ['/thopter\n/thopter kill', { kind: 'launch', ignored: 1 }],
  ['/thopter kill\n/thopter', { kind: 'kill', ignored: 1 }],
  ['/thopter\n/thopter\n/thopter', { kind: 'launch', ignored: 2 }],
  ['> /thopter\n/thopter -g big', { kind: 'launch', gc: 'big' }],
  ['', null],
  ['thopter', null],
];

it(`reads ${SHAPES.length} comment shapes as a person would`, () => {
  assert.ok(SHAPES.length >= 40);
  for (const [text, want] of SHAPES) {
    const found = findCommand(text);
    const label = JSON.stringify(text);
    if (want === null) {
      assert.equal(found, null, `${label} holds no command`);
      continue;
    }
    assert.ok(found, `${label} holds a command`);
    assert.equal(found.command.kind, want.kind, label);
    assert.equal(found.ignored, want.ignored ?? 0, `${label}: commands ignored`);
    if (found.command.kind === 'launch') {
      assert.equal(found.command.gc, want.gc, `${label}: gc`);
      assert.equal(found.command.prompt, want.prompt, `${label}: prompt`);
    }
    if (found.command.kind === 'invalid') assert.match(found.command.problem, want.problem!, label);
  }
});
