/**
 * The dashboard under load, against a hub in its own process (so its CPU is measured alone).
 *
 *   node --import tsx bench/dashboard.ts [records=1000] [dashboards=50] [seconds=30]
 *
 * 1. Time for the main page to be usable with N thopter records (700 running, 200 queued,
 *    100 ended): from navigation to every live card drawn, in headless Chromium (median of 3).
 * 2. The hub's cost of keeping D dashboards live: status changes at 1000 thopters / 3 s
 *    (333 record writes a second) for S seconds, with no dashboard and then with D dashboards
 *    (server-sent event streams read by this process), printing the hub's CPU and bytes per stream.
 */
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { chromium } from 'playwright-core';
import { ThopterStore } from '../src/thopters/store.js';
import { TestWorld, TOKEN } from '../test/helpers/env.js';

const [RECORDS = 1000, DASHBOARDS = 50, SECONDS = 30] = process.argv.slice(2).map(Number);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

/** A process's user+system CPU, in ms, from /proc (clock ticks of 10 ms). */
function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) * 10;
}

/** A running thopter's session as an observer's post leaves it: active now, a 2 kB screen. */
function activeSession(): string {
  const now = new Date().toISOString();
  return JSON.stringify({
    state: 'active',
    agentRunning: true,
    lastActivity: now,
    screen: 'x'.repeat(2000),
    updatedAt: now,
    source: 'observer',
  });
}

async function main() {
  console.log(
    `machine: ${os.cpus()[0]?.model} × ${os.cpus().length}, node ${process.version}, ${new Date().toISOString()}`,
  );
  const world = await new TestWorld().start();
  try {
    const hub = await world.spawnHub({ LOG_LEVEL: 'warn', MAX_THOPTERS: '2000' });
    const store = new ThopterStore(world.client, 'tw');
    const ids: string[] = [];
    for (let i = 0; i < RECORDS; i++) {
      const id = `thopter-bench${String(i).padStart(7, '0')}`;
      await store.create({
        id,
        source: 'github',
        repository: `acme/repo${i % 20}`,
        cloneUrl: 'https://example.invalid/x.git',
        repoName: 'x',
        issue: {
          number: i + 1,
          title: `Issue number ${i + 1}`,
          body: '',
          url: `https://github.com/acme/repo${i % 20}/issues/${i + 1}`,
          comments: [],
        },
        gc: 'default',
        prompt: 'default',
        priority: 100,
        requestedBy: `user${i % 25}`,
        createdAt: new Date(Date.now() - i * 1000).toISOString(),
      });
      const state = i < 700 ? 'running' : i < 900 ? 'queued' : 'destroyed';
      await world.client.hset(`tw:record:${id}`, {
        state,
        machine: JSON.stringify({
          id: `m${i}`,
          provider: 'local',
          workBranch: `thopter/${i + 1}--m${i}`,
          state: 'created',
          createdAt: new Date().toISOString(),
        }),
        ...(state === 'running' ? { session: activeSession() } : {}),
        ...(state === 'destroyed' ? { endedAt: new Date().toISOString(), endReason: 'bench' } : {}),
      });
      ids.push(id);
    }

    // 1. The main page with RECORDS records.
    const browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      headless: true,
      args: ['--no-sandbox'],
    });
    const page = await browser.newPage();
    await page.goto(`${hub.url}/login`);
    await page.fill('input[name="token"]', TOKEN);
    await page.click('button[type="submit"]');
    await page.waitForURL(`${hub.url}/`);
    const live = ids.filter((_, i) => i < 900).length;
    const loads: number[] = [];
    for (let round = 0; round < 3; round++) {
      const started = Date.now();
      await page.goto(`${hub.url}/`);
      await page.waitForFunction((n) => document.querySelectorAll('#thopters article').length === n, live, {
        timeout: 60_000,
      });
      loads.push(Date.now() - started);
    }
    console.log(
      `main page usable with ${RECORDS} records (${live} live cards): median ${median(loads)} ms (runs: ${loads.join(', ')} ms)`,
    );
    await browser.close();

    // 2. Keeping dashboards live under 333 record writes a second.
    const running = ids.slice(0, 700);
    const measure = async (dashboards: number) => {
      const streams: AbortController[] = [];
      let bytes = 0;
      for (let d = 0; d < dashboards; d++) {
        const ac = new AbortController();
        streams.push(ac);
        const res = await fetch(`${hub.url}/dashboard/events`, {
          headers: { authorization: `Bearer ${TOKEN}` },
          signal: ac.signal,
        });
        void (async () => {
          try {
            for await (const chunk of res.body!) bytes += (chunk as Uint8Array).length;
          } catch {
            // aborted
          }
        })();
      }
      await new Promise((r) => setTimeout(r, 2000));
      const startBytes = bytes;
      const cpu0 = cpuMs(hub.child.pid!);
      const t0 = Date.now();
      let writes = 0;
      while (Date.now() - t0 < SECONDS * 1000) {
        const tick = Date.now();
        const pipeline = world.client.pipeline();
        for (let k = 0; k < 33; k++) {
          const id = running[(writes + k) % running.length]!;
          pipeline.hset(`tw:record:${id}`, 'session', activeSession());
          pipeline.publish('tw:records:changed', id);
        }
        await pipeline.exec();
        writes += 33;
        await new Promise((r) => setTimeout(r, Math.max(0, 100 - (Date.now() - tick))));
      }
      const elapsed = (Date.now() - t0) / 1000;
      const cpu = cpuMs(hub.child.pid!) - cpu0;
      for (const ac of streams) ac.abort();
      return {
        writesPerS: writes / elapsed,
        cpuPct: cpu / 10 / elapsed,
        perStreamKBs: dashboards ? (bytes - startBytes) / 1024 / elapsed / dashboards : 0,
      };
    };
    const none = await measure(0);
    const many = await measure(DASHBOARDS);
    const pct = (n: number) => `${n.toFixed(1)}% of one core`;
    console.log(`record writes: ${none.writesPerS.toFixed(0)}/s for ${SECONDS} s`);
    console.log(`hub CPU with 0 dashboards: ${pct(none.cpuPct)}`);
    console.log(
      `hub CPU with ${DASHBOARDS} dashboards: ${pct(many.cpuPct)} (each stream ${many.perStreamKBs.toFixed(1)} kB/s)`,
    );
    console.log(`cost of ${DASHBOARDS} live dashboards: ${pct(many.cpuPct - none.cpuPct)}`);
  } finally {
    await world.close();
  }
}

await main();
