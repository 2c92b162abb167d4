import assert from 'node:assert/strict';
import { it } from 'node:test';
import { clientOf } from '../../src/api/auth-limit.js';

it('counts wrong tokens per IPv4 address and per IPv6 /64', () => {
  assert.equal(clientOf('203.0.113.7'), '203.0.113.7');
  assert.equal(clientOf('::ffff:203.0.113.7'), '203.0.113.7', 'IPv4 on an IPv6 socket is the same client');
  // Every address of one /64 shares a budget, however it is written.
  for (const a of [
    '2001:db8:0:1::1',
    '2001:0db8:0000:0001:ffff:1:2:3',
    '2001:DB8:0:1:a::',
    '2001:db8:0:1::9%eth0',
  ]) {
    assert.equal(clientOf(a), '2001:db8:0:1::/64', a);
  }
  assert.notEqual(clientOf('2001:db8:0:2::1'), clientOf('2001:db8:0:1::1'));
});
