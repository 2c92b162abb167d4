import assert from 'node:assert/strict';
import { it } from 'node:test';
import { nextActivity } from '../../src/status/activity.js';

const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s));

it('is active while the screen changes and idle once it has not changed for idleAfter', () => {
  let a = nextActivity(undefined, 'one', at(0), 60_000);
  assert.equal(a.state, 'active');
  a = nextActivity(a, 'one', at(30), 60_000);
  assert.equal(a.state, 'active');
  assert.equal(a.lastActivity, at(0).toISOString());
  a = nextActivity(a, 'one', at(61), 60_000);
  assert.equal(a.state, 'idle');
  assert.equal(a.idleSince, at(60).toISOString(), 'idle since the threshold was crossed');
  const still = nextActivity(a, 'one', at(90), 60_000);
  assert.equal(still.idleSince, a.idleSince, 'idleSince does not move while idle');
  const again = nextActivity(still, 'two', at(91), 60_000);
  assert.equal(again.state, 'active');
  assert.equal(again.idleSince, undefined);
  assert.equal(again.lastActivity, at(91).toISOString());
});
