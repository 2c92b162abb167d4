import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { agentSettings, parseTurns, TURNS_FILE, turnMessage, withTurnHook } from '../../src/status/turns.js';

describe('withTurnHook', () => {
  it("adds the hub's settings right after Claude Code's program, wherever it is installed", () => {
    const settings = '--settings "$HOME/.thopter/agent-settings.json"';
    assert.equal(
      withTurnHook('claude --dangerously-skip-permissions "read ./prompt.md"'),
      `claude ${settings} --dangerously-skip-permissions "read ./prompt.md"`,
    );
    assert.equal(withTurnHook('/usr/local/bin/claude'), `/usr/local/bin/claude ${settings}`);
  });

  it('types any other program as given', () => {
    for (const command of ['bash ./agent.sh', 'claude-wrapper --x', 'sleep 600', 'env X=1 claude']) {
      assert.equal(withTurnHook(command), command);
    }
  });
});

describe('parseTurns', () => {
  it('counts whole lines, and not one still being written', () => {
    const text = '2026-12-03T05:00:00.000Z\t{"hook_event_name":"Stop"}\n2026-12-03T05:01:00.500Z\t{}\n';
    assert.deepEqual(parseTurns(text), { count: 2, lastEndedAt: '2026-12-03T05:01:00.500Z' });
    assert.deepEqual(parseTurns(text + '2026-12-03T05:02:00.000Z\t{"ses'), {
      count: 2,
      lastEndedAt: '2026-12-03T05:01:00.500Z',
    });
    assert.deepEqual(parseTurns(''), { count: 0 });
    assert.deepEqual(parseTurns('garbage\n\n'), { count: 0 });
  });

  it('takes prompt marks as when the last turn began, not as turns', () => {
    const text =
      '2026-12-03T05:00:00.000Z\tprompt\n2026-12-03T05:01:00.000Z\t{}\n2026-12-03T05:02:00.000Z\tprompt\n';
    assert.deepEqual(parseTurns(text), {
      count: 1,
      lastEndedAt: '2026-12-03T05:01:00.000Z',
      lastStartedAt: '2026-12-03T05:02:00.000Z',
    });
    assert.deepEqual(parseTurns('2026-12-03T05:00:00.000Z\tprompt\n'), {
      count: 0,
      lastStartedAt: '2026-12-03T05:00:00.000Z',
    });
  });
});

describe('turnMessage', () => {
  const line = (at: string, input: object) => `${at}\t${JSON.stringify(input)}\n`;
  const text =
    line('2026-12-03T05:00:00.000Z', {
      hook_event_name: 'Stop',
      last_assistant_message: 'First.\n\tDone. ',
    }) +
    'garbage\n' +
    line('2026-12-03T05:01:00.000Z', { hook_event_name: 'Stop' }) +
    line('2026-12-03T05:02:00.000Z', { last_assistant_message: 'Third.' });

  it("reads the nth turn's last message from its Stop hook input, counting turns as parseTurns does", () => {
    assert.deepEqual(turnMessage(text, 1), { text: 'First.\n\tDone.', at: '2026-12-03T05:00:00.000Z' });
    assert.deepEqual(turnMessage(text, 3), { text: 'Third.', at: '2026-12-03T05:02:00.000Z' });
    assert.equal(parseTurns(text).count, 3);
  });

  it('is undefined for a turn without the field, one not written yet, or a torn line', () => {
    assert.equal(turnMessage(text, 2), undefined);
    assert.equal(turnMessage(text, 4), undefined);
    assert.equal(turnMessage('2026-12-03T05:00:00.000Z\t{"last_assistant_message":"x"', 1), undefined);
    assert.equal(turnMessage('2026-12-03T05:00:00.000Z\t{not json\n', 1), undefined);
  });
});

describe("the Stop hook's command", () => {
  it('appends one line per turn, with the time and the input made one line, and prints nothing', () => {
    const home = mkdtempSync(path.join(tmpdir(), 'turns-'));
    try {
      mkdirSync(path.join(home, '.thopter'));
      const command = JSON.parse(agentSettings()).hooks.Stop[0].hooks[0].command as string;
      // As Claude Code runs a hook: through a shell, its input on stdin.
      const input =
        '{\n  "session_id": "abc",\n  "hook_event_name": "Stop",\n\t"stop_hook_active": false\n}\n';
      for (let i = 0; i < 2; i++) {
        const out = execFileSync('sh', ['-c', command], { input, env: { ...process.env, HOME: home } });
        assert.equal(out.length, 0, 'a hook that prints nothing asks Claude Code for nothing');
      }
      const text = readFileSync(path.join(home, TURNS_FILE), 'utf8');
      const lines = text.split('\n').filter(Boolean);
      assert.equal(lines.length, 2);
      const [at, json] = lines[0]!.split('\t');
      assert.ok(Date.parse(at!) > Date.parse('2026-01-01'));
      assert.equal(JSON.parse(json!).hook_event_name, 'Stop');
      assert.equal(parseTurns(text).count, 2);

      // The prompt hook: a mark after them, and nothing printed (it would be added to the prompt).
      const prompt = JSON.parse(agentSettings()).hooks.UserPromptSubmit[0].hooks[0].command as string;
      const promptInput = '{"hook_event_name":"UserPromptSubmit","prompt":"a\\nb"}';
      const out = execFileSync('sh', ['-c', prompt], {
        input: promptInput,
        env: { ...process.env, HOME: home },
      });
      assert.equal(out.length, 0);
      const turns = parseTurns(readFileSync(path.join(home, TURNS_FILE), 'utf8'));
      assert.equal(turns.count, 2);
      assert.ok(Date.parse(turns.lastStartedAt!) >= Date.parse(turns.lastEndedAt!));
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
