import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { NetnsLab, type RunResult, type Spawned } from './helpers/netns.js';
import { waitFor } from './helpers/wait.js';

// thopter/firewall.sh in a network namespace playing the thopter, against a "world" namespace
// holding every host it may or may not reach: a DNS server that answers test names, the hub, an
// allowed host, a stranger, another thopter. Public hosts use documentation ranges (198.51.100/24,
// 203.0.113/24, 2001:db8::/32); the thopter's own link is private, as on Fly.

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const FIREWALL = path.join(ROOT, 'thopter/firewall.sh');
const BAKED_META = path.join(ROOT, 'thopter/firewall/github-meta.json');
const FIXTURES = path.join(ROOT, 'test/fixtures');
const TABLE = 'thopter_firewall';

const skip =
  process.getuid?.() !== 0
    ? 'needs root, to make network namespaces and load nftables rules'
    : spawnSync('nft', ['--version']).status !== 0
      ? 'needs nft (nftables)'
      : false;

/** Where every host lives. */
const NET = {
  thopter: { v4: '10.99.0.10', v6: 'fdaa:99::10' },
  gateway: { v4: '10.99.0.1', v6: 'fdaa:99::1' },
  /** Like Fly's fdaa::3: the resolver sits on the private network. */
  resolver: { v4: '10.99.0.3', v6: 'fdaa:99::3' },
  hub: { v4: '10.99.0.2', v6: 'fdaa:99::2' },
  otherThopter: { v4: '10.99.0.30', v6: 'fdaa:99::30' },
  /** DNS servers that are not the configured resolver: public, and private. */
  otherDns: { v4: '203.0.113.53', v6: '2001:db8:53::53' },
  privateDns: { v4: '10.99.0.53', v6: 'fdaa:99::53' },
  allowed: { v4: '198.51.100.20', v6: '2001:db8:20::20' },
  anthropic: { v4: '203.0.113.10', v6: '2001:db8:a::10' },
  stranger: { v4: '198.51.100.66', v6: '2001:db8:66::66' },
  /** Inside the fixture's GitHub meta ranges, under no name. */
  github: { v4: '203.0.113.140', v6: '2001:db8:ff::140' },
  movingBefore: { v4: '198.51.100.40', v6: '2001:db8:40::40' },
  movingAfter: { v4: '198.51.100.41', v6: '2001:db8:41::41' },
  movingLater: { v4: '198.51.100.42', v6: '2001:db8:42::42' },
  /** A second thopter namespace, on a link of its own, for runs that need a fresh table. */
  spare: { v4: '10.98.0.10', v6: 'fdaa:98::10' },
  spareGateway: { v4: '10.98.0.1', v6: 'fdaa:98::1' },
};
type Host = { v4: string; v6: string };

const HUB_STATUS_PORT = 8080;
const ECHO_PORT = 7000;

let dir: string;
let zoneFile: string;
let firewallLog: string;
const lab = new NetnsLab();
let world: string;
let thopter: string;
let spare: string;
let started: RunResult;

const records = (host: Host) => ({ A: [host.v4], AAAA: [host.v6] });

/** The DNS server rereads the zone at every query; renaming makes each change atomic. */
function setZone(zone: Record<string, { A: string[]; AAAA: string[] }>) {
  writeFileSync(`${zoneFile}.new`, JSON.stringify(zone));
  renameSync(`${zoneFile}.new`, zoneFile);
}

const ZONE = {
  'allowed.test': records(NET.allowed),
  // In the script's default list: the defaults are resolved like any other name.
  'api.anthropic.com': records(NET.anthropic),
  'hub.test': records(NET.hub),
  // An allowed name that resolves into the private network.
  'rebind.test': records(NET.otherThopter),
  'moving.test': records(NET.movingBefore),
};

/** The environment init gives the script in a thopter, pointed at this test's files. */
function firewallEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    ALLOWED_DOMAINS: 'allowed.test, rebind.test moving.test',
    HUB_STATUS_URL: `http://hub.test:${HUB_STATUS_PORT}/api/thopters/t-1/status`,
    GITHUB_META_FILE: path.join(FIXTURES, 'firewall-github-meta.json'),
    FIREWALL_LOG: firewallLog,
    FIREWALL_STATE: path.join(dir, 'state'),
    ...extra,
  };
}

/** Run as init and pm2 run it: the script itself, executable. */
function firewall(ns: string, command: string, env: Record<string, string>, wrapper: string[] = []) {
  return lab.run(ns, [...wrapper, FIREWALL, command], { env });
}

const url = (address: string, port: number) =>
  address.includes(':') ? `http://[${address}]:${port}/` : `http://${address}:${port}/`;

function curl(ns: string, target: string, args: string[] = []) {
  return lab.run(ns, ['curl', '-sS', '--max-time', '10', ...args, target]);
}

async function assertReaches(ns: string, target: string, expected: string, args: string[] = []) {
  const r = await curl(ns, target, args);
  assert.equal(r.code, 0, `${target} should be reachable: ${r.stderr}`);
  assert.match(r.stdout, new RegExp(`^hello from ${expected.replace(/[.[\]]/g, '\\$&')} port `));
}

/** Refused at once (curl's "couldn't connect"), not left to time out (which would be exit 28). */
async function assertRefused(ns: string, target: string, args: string[] = []) {
  const r = await curl(ns, target, args);
  assert.equal(r.code, 7, `${target} should be refused, got exit ${r.code}: ${r.stdout}${r.stderr}`);
}

async function counter(ns: string, name: string): Promise<number> {
  const r = await lab.run(ns, ['nft', '-j', 'list', 'counter', 'inet', TABLE, name]);
  assert.equal(r.code, 0, r.stderr);
  const found = JSON.parse(r.stdout).nftables.find((o: any) => o.counter)?.counter;
  assert.ok(found, `counter ${name} exists`);
  return found.packets as number;
}

async function hasElement(ns: string, set: string, element: string): Promise<boolean> {
  return (await lab.run(ns, ['nft', 'get', 'element', 'inet', TABLE, set, `{ ${element} }`])).code === 0;
}

async function ruleset(ns: string): Promise<string> {
  const r = await lab.run(ns, ['nft', 'list', 'ruleset']);
  assert.equal(r.code, 0, r.stderr);
  return r.stdout;
}

function dig(ns: string, server: string, name: string, opts: { tcp?: boolean } = {}) {
  return lab.run(ns, [
    ...['dig', '+short', '+time=2', '+tries=1', ...(opts.tcp ? ['+tcp'] : [])],
    `@${server}`,
    name,
  ]);
}

/**
 * The kernel logs packets of other network namespaces only with net.netfilter.nf_log_all_netns=1:
 * it is turned on for `fn` and put back after. Returns undefined when the kernel log cannot be
 * read here (the assertions then rest on the rule and its counter).
 */
async function withKernelLog<T>(fn: (read: () => string) => Promise<T>): Promise<T | undefined> {
  const sysctl = '/proc/sys/net/netfilter/nf_log_all_netns';
  const read = () => spawnSync('dmesg', [], { encoding: 'utf8' });
  if (!existsSync(sysctl) || read().status !== 0) return undefined;
  const was = readFileSync(sysctl, 'utf8').trim();
  try {
    writeFileSync(sysctl, '1');
  } catch {
    return undefined;
  }
  try {
    return await fn(() => read().stdout);
  } finally {
    if (was !== '1') writeFileSync(sysctl, was);
  }
}

describe('thopter egress firewall', { skip }, () => {
  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'fwt-'));
    zoneFile = path.join(dir, 'zone.json');
    firewallLog = path.join(dir, 'firewall.log');
    world = lab.addNamespace('world');
    // `ip netns exec` shows the thopter's programs (curl, dig, the script) this resolv.conf.
    const resolvConf = `nameserver ${NET.resolver.v6}\nnameserver ${NET.resolver.v4}\n`;
    thopter = lab.addNamespace('thopter', { resolvConf });
    spare = lab.addNamespace('spare', { resolvConf });

    const worldHosts = [
      NET.resolver,
      NET.hub,
      NET.otherThopter,
      NET.otherDns,
      NET.privateDns,
      NET.allowed,
      NET.anthropic,
      NET.stranger,
      NET.github,
      NET.movingBefore,
      NET.movingAfter,
      NET.movingLater,
    ];
    lab.link(
      { ns: thopter, dev: 'eth0', addresses: [`${NET.thopter.v4}/24`, `${NET.thopter.v6}/64`] },
      {
        ns: world,
        dev: 'eth0',
        addresses: [
          `${NET.gateway.v4}/24`,
          `${NET.gateway.v6}/64`,
          ...worldHosts.flatMap((h) => [`${h.v4}/32`, `${h.v6}/128`]),
        ],
      },
    );
    lab.link(
      { ns: spare, dev: 'eth0', addresses: [`${NET.spare.v4}/24`, `${NET.spare.v6}/64`] },
      { ns: world, dev: 'eth1', addresses: [`${NET.spareGateway.v4}/24`, `${NET.spareGateway.v6}/64`] },
    );
    for (const [ns, gw] of [
      [thopter, NET.gateway],
      [spare, NET.spareGateway],
    ] as const) {
      lab.route(ns, ['default', 'via', gw.v4]);
      lab.route(ns, ['default', 'via', gw.v6]);
    }

    setZone(ZONE);
    const node = ['node', '--import', 'tsx'];
    await lab.spawn(
      world,
      [
        ...[...node, path.join(FIXTURES, 'dns-server.ts'), zoneFile],
        ...[NET.resolver, NET.otherDns, NET.privateDns].flatMap((h) => [h.v4, h.v6]),
      ],
      { ready: 'ready' },
    );
    const endpoints = [
      ...[NET.allowed, NET.stranger, NET.github, NET.movingBefore, NET.movingAfter, NET.movingLater].flatMap(
        (h) => [`http:${h.v4}:80`, `http:${h.v6}:80`],
      ),
      ...[NET.movingBefore, NET.movingAfter].flatMap((h) => [
        `echo:${h.v4}:${ECHO_PORT}`,
        `echo:${h.v6}:${ECHO_PORT}`,
      ]),
      `http:${NET.anthropic.v4}:443`,
      `http:${NET.anthropic.v6}:443`,
      ...[HUB_STATUS_PORT, 6379, 22].flatMap((port) => [
        `http:${NET.hub.v4}:${port}`,
        `http:${NET.hub.v6}:${port}`,
      ]),
      ...[22, HUB_STATUS_PORT].flatMap((port) => [
        `http:${NET.otherThopter.v4}:${port}`,
        `http:${NET.otherThopter.v6}:${port}`,
      ]),
    ];
    await lab.spawn(world, [...node, path.join(FIXTURES, 'firewall-listeners.ts'), ...endpoints], {
      ready: 'ready',
      env: { GITHUB_META_BODY: path.join(FIXTURES, 'firewall-github-meta.json') },
    });
    // The thopter's sshd stands in as a listener on 22, and an agent's server on 8000.
    await lab.spawn(
      thopter,
      [
        ...[...node, path.join(FIXTURES, 'firewall-listeners.ts')],
        ...[22, 8000].flatMap((port) => [`http:${NET.thopter.v4}:${port}`, `http:${NET.thopter.v6}:${port}`]),
      ],
      { ready: 'ready' },
    );

    // Without the firewall everything answers: every refusal below is the firewall's doing.
    for (const target of [
      url(NET.stranger.v4, 80),
      url(NET.stranger.v6, 80),
      url(NET.otherThopter.v4, 22),
      url(NET.hub.v6, 6379),
    ]) {
      await assertReaches(thopter, target, new URL(target).hostname.replace(/^\[|\]$/g, ''));
    }
    assert.equal((await dig(thopter, NET.otherDns.v4, 'allowed.test')).stdout, `${NET.allowed.v4}\n`);

    started = await firewall(thopter, 'start', firewallEnv());
  });

  after(async () => {
    await lab.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('loads one inet table whose chains drop by default, logging each step with a timestamp', async () => {
    assert.equal(started.code, 0, started.stderr);
    const { nftables } = JSON.parse((await lab.run(thopter, ['nft', '-j', 'list', 'ruleset'])).stdout);
    const tables = nftables.filter((o: any) => o.table).map((o: any) => `${o.table.family} ${o.table.name}`);
    assert.deepEqual(tables, [`inet ${TABLE}`]);
    const hooks = nftables
      .filter((o: any) => o.chain?.hook)
      .map((o: any) => `${o.chain.hook} ${o.chain.policy}`)
      .sort();
    assert.deepEqual(hooks, ['forward drop', 'input drop', 'output drop']);

    const lines = readFileSync(firewallLog, 'utf8').trim().split('\n');
    for (const line of lines) assert.match(line, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z firewall: /);
    assert.match(lines[0]!, /firewall: start: loading the egress firewall/);
    assert.match(lines.at(-1)!, /firewall: start: loaded; /);
    assert.ok(lines.some((l) => l.endsWith(`allow allowed.test: ${NET.allowed.v4} ${NET.allowed.v6}`)));
    assert.equal(started.stderr.trim(), lines.join('\n'), 'the same lines go to stderr');
  });

  it('reaches an allowed name, a default name and GitHub ranges over IPv4 and IPv6', async () => {
    await assertReaches(thopter, 'http://allowed.test/', NET.allowed.v4, ['-4']);
    await assertReaches(thopter, 'http://allowed.test/', NET.allowed.v6, ['-6']);
    await assertReaches(thopter, 'http://api.anthropic.com:443/', NET.anthropic.v4, ['-4']);
    await assertReaches(thopter, 'http://api.anthropic.com:443/', NET.anthropic.v6, ['-6']);
    await assertReaches(thopter, url(NET.github.v4, 80), NET.github.v4);
    await assertReaches(thopter, url(NET.github.v6, 80), NET.github.v6);
  });

  // The stranger is inside the fixture meta's "hooks" range: only api, web, git and packages count.
  it('refuses any other public address, counting and logging the drop', async (t) => {
    const before = await counter(thopter, 'egress_refused');
    // A port of its own, so this run's log line cannot be another run's.
    const port = 20_000 + Math.floor(Math.random() * 40_000);
    const logged = await withKernelLog(async (readLog) => {
      await assertRefused(thopter, url(NET.stranger.v4, port));
      return waitFor(
        'the drop in the kernel log',
        () =>
          readLog()
            .split('\n')
            .find(
              (l) =>
                l.includes('THOPTER-DROP: egress ') &&
                l.includes(`DST=${NET.stranger.v4} `) &&
                l.includes(`DPT=${port} `),
            ),
        { timeoutMs: 10_000 },
      );
    });
    if (logged === undefined) {
      await assertRefused(thopter, url(NET.stranger.v4, port));
      t.diagnostic('the kernel log is not readable here: the log rule is checked instead');
    }
    await assertRefused(thopter, url(NET.stranger.v4, 80));
    await assertRefused(thopter, url(NET.stranger.v6, 80));
    assert.ok((await counter(thopter, 'egress_refused')) >= before + 3);
    assert.match(
      await ruleset(thopter),
      /counter name "egress_refused" limit rate 10\/minute log prefix "THOPTER-DROP: egress "/,
    );
  });

  it('reaches the hub on its status port only, over IPv4 and IPv6', async () => {
    await assertReaches(thopter, url(NET.hub.v4, HUB_STATUS_PORT), NET.hub.v4);
    await assertReaches(thopter, url(NET.hub.v6, HUB_STATUS_PORT), NET.hub.v6);
    const before = await counter(thopter, 'private_refused');
    for (const port of [6379, 22]) {
      await assertRefused(thopter, url(NET.hub.v4, port));
      await assertRefused(thopter, url(NET.hub.v6, port));
    }
    assert.ok((await counter(thopter, 'private_refused')) >= before + 4);
  });

  it('refuses other private hosts, even under an allowed name', async () => {
    for (const port of [22, HUB_STATUS_PORT]) {
      await assertRefused(thopter, url(NET.otherThopter.v4, port));
      await assertRefused(thopter, url(NET.otherThopter.v6, port));
    }
    // rebind.test is allowed and resolved into the sets, yet the private range wins.
    assert.equal((await dig(thopter, NET.resolver.v6, 'rebind.test')).stdout, `${NET.otherThopter.v4}\n`);
    assert.ok(await hasElement(thopter, 'allowed_v4', NET.otherThopter.v4));
    assert.ok(await hasElement(thopter, 'allowed_v6', NET.otherThopter.v6));
    await assertRefused(thopter, 'http://rebind.test:22/', ['-4']);
    await assertRefused(thopter, 'http://rebind.test:22/', ['-6']);
  });

  it('allows DNS to the configured resolvers only, over UDP and TCP', async () => {
    for (const tcp of [false, true]) {
      for (const server of [NET.resolver.v6, NET.resolver.v4]) {
        const r = await dig(thopter, server, 'allowed.test', { tcp });
        assert.equal(r.stdout, `${NET.allowed.v4}\n`, `${server} tcp=${tcp}: ${r.stderr}`);
      }
      for (const server of [NET.otherDns.v4, NET.otherDns.v6, NET.privateDns.v4, NET.privateDns.v6]) {
        const r = await dig(thopter, server, 'allowed.test', { tcp });
        assert.notEqual(r.code, 0, `${server} tcp=${tcp} should not answer: ${r.stdout}`);
        assert.doesNotMatch(r.stdout, /198\.51\.100\.20/);
      }
    }
  });

  it("takes connections in on the hub's SSH port only", async () => {
    await assertReaches(world, url(NET.thopter.v4, 22), NET.thopter.v4);
    await assertReaches(world, url(NET.thopter.v6, 22), NET.thopter.v6);
    const before = await counter(thopter, 'ingress_refused');
    await assertRefused(world, url(NET.thopter.v4, 8000));
    await assertRefused(world, url(NET.thopter.v6, 8000));
    assert.ok((await counter(thopter, 'ingress_refused')) >= before + 2);
  });

  it('refresh picks up a changed answer without recreating the table', async () => {
    const handle = async () =>
      (await lab.run(thopter, ['nft', '-a', 'list', 'table', 'inet', TABLE])).stdout.split('\n')[0];
    const handleBefore = await handle();
    const refusedBefore = await counter(thopter, 'egress_refused');
    assert.ok(refusedBefore > 0);
    await assertRefused(thopter, url(NET.movingAfter.v4, 80));

    setZone({ ...ZONE, 'moving.test': records(NET.movingAfter) });
    const r = await firewall(thopter, 'refresh', firewallEnv());
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /firewall: refresh: \d+ IPv4 and \d+ IPv6 addresses allowed for 3600s more/);

    await assertReaches(thopter, 'http://moving.test/', NET.movingAfter.v4, ['-4']);
    await assertReaches(thopter, 'http://moving.test/', NET.movingAfter.v6, ['-6']);
    // The same table, counters and all: a refresh changes set elements only.
    assert.equal(await handle(), handleBefore);
    assert.ok((await counter(thopter, 'egress_refused')) >= refusedBefore);
    // The old answer stays allowed until its timeout: clients may still hold it in a cache.
    assert.ok(await hasElement(thopter, 'allowed_v4', NET.movingBefore.v4));
  });

  it('refresh-loop renews current answers, lets old ones expire, and keeps established connections', async () => {
    // Short times, so that an address no answer names anymore expires while the test watches.
    const loopEnv = firewallEnv({
      FIREWALL_DOMAINS: '',
      FIREWALL_REFRESH_SECONDS: '1',
      FIREWALL_ADDRESS_TIMEOUT_SECONDS: '8',
    });
    // moving.test at `movingBefore` again, renewed with the short timeout from now on.
    setZone(ZONE);
    const loop = await lab.spawn(thopter, [FIREWALL, 'refresh-loop'], { env: loopEnv });
    let clients: Spawned[] = [];
    try {
      await waitFor('a refresh with the short timeout', () => loop.stderr.includes('allowed for 8s more'));
      clients = await Promise.all(
        [NET.movingBefore.v4, NET.movingBefore.v6].map(async (address) => {
          const client = await lab.spawn(thopter, [
            ...['node', '--import', 'tsx', path.join(FIXTURES, 'firewall-echo-client.ts')],
            ...[address, String(ECHO_PORT)],
          ]);
          await waitFor(`a connection to ${address}`, () => client.stdout.includes('hello from'));
          return client;
        }),
      );

      await assertRefused(thopter, url(NET.movingLater.v6, 80));
      setZone({ ...ZONE, 'moving.test': records(NET.movingLater) });
      await waitFor(
        'the loop to allow the new answer',
        async () =>
          (await curl(thopter, url(NET.movingLater.v4, 80))).code === 0 &&
          (await curl(thopter, url(NET.movingLater.v6, 80))).code === 0,
      );
      await waitFor(
        'the old answer to expire',
        async () =>
          !(await hasElement(thopter, 'allowed_v4', NET.movingBefore.v4)) &&
          !(await hasElement(thopter, 'allowed_v6', NET.movingBefore.v6)),
        { timeoutMs: 30_000 },
      );

      await assertRefused(thopter, url(NET.movingBefore.v4, ECHO_PORT));
      await assertRefused(thopter, url(NET.movingBefore.v6, ECHO_PORT));
      for (const client of clients) {
        client.write('still connected\n');
        await waitFor('the echo over the established connection', () =>
          client.stdout.includes('still connected\n'),
        );
        assert.doesNotMatch(client.stdout, /closed/);
      }
    } finally {
      for (const client of clients) client.child.kill('SIGKILL');
      loop.child.kill('SIGTERM');
      await waitFor('the loop to stop', () => loop.exited);
    }
    assert.match(loop.stderr, /firewall: refresh-loop: stopped/);
    // Back to the long timeout for whatever runs next.
    assert.equal((await firewall(thopter, 'refresh', firewallEnv())).code, 0);
  });

  it('status prints the counters and the size of each set', async () => {
    const r = await lab.run(thopter, [FIREWALL, 'status']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^firewall: table inet thopter_firewall is loaded$/m);
    assert.match(r.stdout, /^egress_refused: [1-9]\d* packets, \d+ bytes$/m);
    assert.match(r.stdout, /^hub_v6: 1 elements$/m);
    assert.match(r.stdout, /^resolvers_v6: 1 elements$/m);
  });

  it("cannot be changed by the agent's user, who has no CAP_NET_ADMIN", async () => {
    const asNobody = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];
    const r = await lab.run(thopter, [...asNobody, 'nft', 'delete', 'table', 'inet', TABLE]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /Operation not permitted/);
    assert.match(await ruleset(thopter), new RegExp(`table inet ${TABLE}`));
  });

  describe('on a fresh thopter', () => {
    /** Fast runs: no base names, no hub. */
    const spareEnv = (extra: Record<string, string> = {}) =>
      firewallEnv({ FIREWALL_DOMAINS: '', ALLOWED_DOMAINS: 'allowed.test', HUB_STATUS_URL: '', ...extra });

    it('DANGEROUSLY_SKIP_FIREWALL=I_UNDERSTAND loads nothing and says so loudly', async () => {
      const r = await firewall(spare, 'start', spareEnv({ DANGEROUSLY_SKIP_FIREWALL: 'I_UNDERSTAND' }));
      assert.equal(r.code, 0, r.stderr);
      assert.match(
        r.stderr,
        /^WARNING: DANGEROUSLY_SKIP_FIREWALL=I_UNDERSTAND: no egress firewall is loaded\.$/m,
      );
      assert.match(
        r.stderr,
        /firewall: WARNING: DANGEROUSLY_SKIP_FIREWALL=I_UNDERSTAND: the firewall is OFF/,
      );
      assert.equal(await ruleset(spare), '');
      await assertReaches(spare, url(NET.stranger.v4, 80), NET.stranger.v4);
    });

    it('refuses any other value of DANGEROUSLY_SKIP_FIREWALL', async () => {
      for (const value of ['yes', 'true', 'i_understand', 'I_UNDERSTAND ']) {
        const r = await firewall(spare, 'start', spareEnv({ DANGEROUSLY_SKIP_FIREWALL: value }));
        assert.equal(r.code, 2, `${JSON.stringify(value)}: ${r.stderr}`);
        assert.match(r.stderr, /the only accepted value is I_UNDERSTAND/);
      }
      assert.equal(await ruleset(spare), '');
    });

    it('exits non-zero, loading nothing, when nft cannot load the ruleset', async () => {
      // The same shell, but without the capability nft needs: every load fails.
      const noNetAdmin = ['setpriv', '--inh-caps=-net_admin', '--bounding-set=-net_admin'];
      const r = await firewall(spare, 'start', spareEnv(), noNetAdmin);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /error: the ruleset did not load: .*Operation not permitted/);
      assert.match(r.stderr, /error: start failed; the agent must not run$/m);
      assert.equal(await ruleset(spare), '');
      const status = await lab.run(spare, [FIREWALL, 'status']);
      assert.equal(status.code, 1);
      assert.match(status.stdout, /is not loaded/);
    });

    it('fetches GitHub ranges from GITHUB_META_URL, or falls back to the baked list', async () => {
      const fetched = await firewall(
        spare,
        'start',
        spareEnv({ GITHUB_META_FILE: '', GITHUB_META_URL: `${url(NET.allowed.v4, 80)}meta` }),
      );
      assert.equal(fetched.code, 0, fetched.stderr);
      assert.match(
        fetched.stderr,
        /github ranges: 1 IPv4 and 1 IPv6 from http:\/\/198\.51\.100\.20:80\/meta/,
      );
      await assertReaches(spare, url(NET.github.v6, 80), NET.github.v6);

      // Nothing listens there: the fetch fails, and the ranges baked into the image are loaded.
      const fallback = await firewall(
        spare,
        'start',
        spareEnv({ GITHUB_META_FILE: '', GITHUB_META_URL: `${url(NET.stranger.v4, 9)}meta` }),
      );
      assert.equal(fallback.code, 0, fallback.stderr);
      assert.match(fallback.stderr, /using the baked list .*thopter\/firewall\/github-meta\.json/);
      const baked = JSON.parse(readFileSync(BAKED_META, 'utf8'));
      for (const range of [...baked.api, ...baked.web, ...baked.git, ...baked.packages] as string[]) {
        const address = range.split('/')[0]!;
        assert.ok(
          await hasElement(spare, address.includes(':') ? 'github_v6' : 'github_v4', address),
          `${range} is loaded`,
        );
      }
      await assertRefused(spare, url(NET.github.v4, 80));
    });

    it('allows DNS to the resolvers of FIREWALL_RESOLV_CONF only', async () => {
      const resolvConf = path.join(dir, 'resolv.conf');
      writeFileSync(resolvConf, `# only one\nnameserver ${NET.resolver.v4}`);
      const r = await firewall(spare, 'start', spareEnv({ FIREWALL_RESOLV_CONF: resolvConf }));
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, new RegExp(`resolvers: ${NET.resolver.v4} \\(from ${resolvConf}\\)`));
      assert.equal((await dig(spare, NET.resolver.v4, 'allowed.test')).stdout, `${NET.allowed.v4}\n`);
      assert.notEqual((await dig(spare, NET.resolver.v6, 'allowed.test')).code, 0);
      await assertReaches(spare, url(NET.allowed.v6, 80), NET.allowed.v6);
    });

    it('loads a lockdown ruleset and exits non-zero when the full ruleset is refused', async () => {
      const badMeta = path.join(dir, 'bad-meta.json');
      writeFileSync(badMeta, JSON.stringify({ api: ['300.1.2.0/24'] }));
      const r = await firewall(spare, 'start', spareEnv({ GITHUB_META_FILE: badMeta }));
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /error: the ruleset did not load: .*300\.1\.2\.0/);
      assert.match(r.stderr, /error: loaded the lockdown ruleset instead/);
      assert.match(await ruleset(spare), /THOPTER-DROP: lockdown /);
      await assertRefused(spare, url(NET.allowed.v4, 80));
      await assertRefused(spare, url(NET.allowed.v6, 80));
      assert.notEqual((await dig(spare, NET.resolver.v4, 'allowed.test')).code, 0);
    });
  });
});
