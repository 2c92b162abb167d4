import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import type { Hub } from '../src/hub.js';
import { api, ROOT, TestWorld, TOKEN, writeFixture } from './helpers/env.js';
import { waitFor } from './helpers/wait.js';

const world = new TestWorld();
const SHOTS = path.join(ROOT, 'test-output', 'screenshots');
let hub: Hub;
let origin: string;
let browser: Browser;
let context: BrowserContext;
let holdFile: string;
/** Everything the browser reported as blocked by the hub's Content-Security-Policy, on any page. */
const cspViolations: string[] = [];

/** A Claude Code transcript in its real JSONL shape (one session, as ~/.claude/projects keeps it). */
const TRANSCRIPT = [
  { type: 'summary', summary: 'Fix the login redirect', leafUuid: 'c3' },
  {
    parentUuid: null,
    isSidechain: false,
    userType: 'external',
    cwd: '/data/thopter/workspace',
    sessionId: 'sess-1',
    version: '1.0.98',
    gitBranch: 'thopter/7--abc',
    type: 'user',
    message: { role: 'user', content: 'Please read prompt.md and do the task.' },
    uuid: 'u1',
    timestamp: '2026-11-24T10:00:00.000Z',
  },
  {
    parentUuid: 'u1',
    type: 'assistant',
    message: {
      id: 'msg_1',
      type: 'message',
      role: 'assistant',
      model: 'claude-sonnet-4-5',
      content: [
        { type: 'text', text: 'I will look at the login handler first.' },
        { type: 'tool_use', id: 'toolu_1', name: 'Bash', input: { command: 'grep -rn redirect src/' } },
      ],
      stop_reason: 'tool_use',
      usage: { input_tokens: 10, output_tokens: 20 },
    },
    uuid: 'a1',
    timestamp: '2026-11-24T10:00:05.000Z',
  },
  {
    parentUuid: 'a1',
    type: 'user',
    message: {
      role: 'user',
      content: [{ tool_use_id: 'toolu_1', type: 'tool_result', content: 'src/login.ts:12: redirect(next)' }],
    },
    toolUseResult: { stdout: 'src/login.ts:12: redirect(next)', stderr: '' },
    uuid: 'u2',
    timestamp: '2026-11-24T10:00:06.000Z',
  },
  { type: 'file-history-snapshot', messageId: 'm9', snapshot: { trackedFileBackups: {} } },
]
  .map((e) => JSON.stringify(e))
  .join('\n');

before(async () => {
  await world.start();
  origin = world.origin();
  holdFile = path.join(world.dir, 'hold-post-checkout');
  // A thopter waits in post-checkout while the hold file exists: the test sees it provisioning.
  const postCheckout = writeFixture(
    world.dir,
    'post-checkout.sh',
    `#!/usr/bin/env bash\nfor _ in $(seq 600); do [ -e ${holdFile} ] || exit 0; sleep 0.1; done\n`,
    0o755,
  );
  hub = await world.hub({
    MAX_THOPTERS: '2',
    THOPTER_IDLE_AFTER: '4s',
    THOPTER_AGENT_COMMAND: `bash ${path.join(ROOT, 'test/fixtures/dashboard-agent.sh')}`,
    THOPTER_POST_CHECKOUT_SCRIPT: postCheckout,
  });
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox'],
  });
  context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.on('console', (msg) => {
    if (/Content Security Policy|securitypolicyviolation/i.test(msg.text())) {
      cspViolations.push(`${msg.location().url}: ${msg.text()}`);
    }
  });
  await context.addInitScript(() =>
    document.addEventListener('securitypolicyviolation', (e) =>
      console.error(`securitypolicyviolation ${e.violatedDirective} ${e.blockedURI}`),
    ),
  );
  mkdirSync(SHOTS, { recursive: true });
});
after(async () => {
  await browser?.close();
  await world.close();
});

async function signIn(page: Page, token = TOKEN) {
  await page.goto(`${hub.url}/`);
  await page.waitForURL(/\/login/);
  await page.fill('input[name="token"]', token);
  await page.click('button[type="submit"]');
}

const card = (page: Page, id: string) => page.locator(`#thopters article[data-id="${id}"]`);
const launch = async (title: string, repository = origin) => {
  const res = await api(hub.url, 'POST', '/api/thopters', { repository, title });
  assert.equal(res.status, 202, JSON.stringify(res.body));
  return res.body.id as string;
};
const paneText = async (id: string) => {
  const t = (await hub.store.get(id))!;
  return (await hub.provider.snapshot(t.machine!.id)).screen;
};

let running: string;

describe('the dashboard, in Chromium', () => {
  it('needs a sign-in: no cookie is refused, a wrong token says so', async () => {
    const bare = await fetch(`${hub.url}/api/thopters`);
    assert.equal(bare.status, 401);
    const events = await fetch(`${hub.url}/dashboard/events`, { redirect: 'manual' });
    assert.equal(events.status, 401);
    const html = await fetch(`${hub.url}/`, { headers: { accept: 'text/html' }, redirect: 'manual' });
    assert.equal(html.status, 302);
    assert.match(html.headers.get('location') ?? '', /^\/login\?next=/);

    const page = await context.newPage();
    await signIn(page, 'not-the-token-at-all');
    await page.getByRole('alert').waitFor();
    assert.match(await page.getByRole('alert').innerText(), /not the hub’s token/);
    assert.deepEqual(await context.cookies(), [], 'no session cookie for a wrong token');

    await page.fill('input[name="token"]', TOKEN);
    await page.click('button[type="submit"]');
    await page.waitForURL(`${hub.url}/`);
    const [cookie] = await context.cookies();
    assert.equal(cookie?.name, 'thopter_session');
    assert.equal(cookie?.httpOnly, true);
    assert.equal(cookie?.sameSite, 'Strict');
    await page.getByText('No thopters yet').waitFor();
    await page.close();
  });

  it('shows a thopter launched through the API without a reload: phases, then active, then idle', async () => {
    const page = await context.newPage();
    await page.goto(`${hub.url}/`);
    await page.getByText('No thopters yet').waitFor();
    writeFileSync(holdFile, '');
    running = await launch('Fix the login redirect');
    // Held in post-checkout: the card shows the phase it is in.
    await card(page, running).and(page.locator('[data-condition="provisioning"]')).waitFor();
    await card(page, running).getByText('phase post-checkout').waitFor({ timeout: 60_000 });
    rmSync(holdFile);
    await card(page, running).and(page.locator('[data-condition="active"]')).waitFor({ timeout: 60_000 });
    await card(page, running).getByText('agent running').waitFor();
    await card(page, running).and(page.locator('[data-condition="idle"]')).waitFor({ timeout: 60_000 });
    await card(page, running)
      .getByText(/idle \d+s/)
      .waitFor();
    assert.match(await card(page, running).locator('.where').innerText(), /thopter\/.*--/, 'the work branch');

    // Its own page: the phase timeline, the screen, the events.
    await card(page, running).locator('a.title').click();
    await page.waitForURL(`${hub.url}/thopters/${running}`);
    for (const phase of ['create-machine', 'clone-repo', 'post-checkout', 'launch-agent']) {
      assert.match(await page.locator('.phase', { hasText: phase }).innerText(), /succeeded/);
    }
    await page.locator('pre.screen', { hasText: 'agent at work' }).waitFor();
    await page.close();

    // Metrics a Prometheus scrape sees.
    const metrics = await fetch(`${hub.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
    const text = await metrics.text();
    assert.match(text, /thopter_thopters\{state="running"\} 1/);
    assert.match(text, /thopter_phase_duration_seconds_count\{phase="clone-repo",outcome="succeeded"\} 1/);
    assert.equal((await fetch(`${hub.url}/metrics`)).status, 401);
  });

  it('opens the terminal: it shows the tmux session, and typed keys reach it (not when read-only)', async () => {
    const page = await context.newPage();
    await page.goto(`${hub.url}/thopters/${running}/terminal`);
    await page
      .locator('#terminal[data-connected="true"]')
      .waitFor()
      .catch(async (err) => {
        throw new Error(`${err.message}; status: ${await page.locator('#term-status').innerText()}`);
      });
    const screen = () => page.evaluate(() => (window as any).terminalText() as string);
    await waitFor('the agent’s screen in the browser', async () =>
      (await screen()).includes('agent at work'),
    );
    await page.locator('#terminal').click();
    await page.keyboard.type('echo typed-$((6*7))');
    await page.keyboard.press('Enter');
    await waitFor('the typed command to run in the tmux session', async () =>
      (await paneText(running)).includes('typed-42'),
    );
    await waitFor('its output in the browser', async () => (await screen()).includes('typed-42'));
    await page.close();

    const viewer = await context.newPage();
    await viewer.goto(`${hub.url}/thopters/${running}/terminal?mode=view`);
    await viewer.locator('#terminal[data-connected="true"]').waitFor();
    await viewer.locator('#terminal').click();
    await viewer.keyboard.type('echo viewer-$((1+1))');
    await viewer.keyboard.press('Enter');
    // xterm itself takes no input in read-only mode; a forged input message is refused by the hub.
    await viewer.evaluate(() => {
      const ws = new WebSocket(
        location.href.replace(/^http/, 'ws').replace(/\/terminal.*$/, '/terminal/ws?mode=view'),
      );
      ws.onopen = () => ws.send(JSON.stringify({ type: 'input', data: 'echo forged-$((2+2))\r' }));
      ws.onmessage = (e) => {
        if (typeof e.data === 'string' && e.data.includes('read-only')) (window as any).refused = true;
      };
    });
    await viewer.waitForFunction(() => (window as any).refused === true);
    const pane = await paneText(running);
    assert.doesNotMatch(pane, /viewer-2|forged-4/);
    await viewer.close();
  });

  it("opens the terminal on a phone without shrinking the agent's tmux window for everyone", async () => {
    const t = (await hub.store.get(running))!;
    const transport = await hub.provider.transport(t.machine!.id);
    const windowSize = async () =>
      (
        await transport.exec([
          'tmux',
          'display-message',
          '-p',
          '-t',
          'thopter',
          '#{window_width}x#{window_height}',
        ])
      ).stdout.trim();
    const before = await windowSize();
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true });
    const page = await phone.newPage();
    await signIn(page);
    await page.goto(`${hub.url}/thopters/${running}/terminal`);
    await page.locator('#terminal[data-connected="true"]').waitFor();
    // The hub answers the phone's size with the window's: by then it has handled it.
    const shown = await page.locator('#terminal[data-size]').getAttribute('data-size');
    assert.equal(shown, before, 'the phone shows the window at its size');
    await page.locator('#terminal').click();
    await page.keyboard.type('echo phone-$((3*5))');
    await page.keyboard.press('Enter');
    await waitFor('the phone’s keys in the session', async () =>
      (await paneText(running)).includes('phone-15'),
    );
    assert.equal(await windowSize(), before, 'the window is as wide as it was');
    await phone.close();
    await transport.close();
  });

  it('renders the session log from the transcript, and shows what is added to it', async () => {
    const t = (await hub.store.get(running))!;
    const transport = await hub.provider.transport(t.machine!.id);
    const dir = path.join(transport.paths.home, '.claude', 'projects', '-data-thopter-workspace');
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, 'sess-1.jsonl');
    writeFileSync(file, TRANSCRIPT + '\n');
    const page = await context.newPage();
    await page.goto(`${hub.url}/thopters/${running}/log`);
    await page.getByText('Please read prompt.md and do the task.').waitFor();
    await page.getByText('I will look at the login handler first.').waitFor();
    const tool = page.locator('details.tool', { hasText: 'Bash' });
    assert.match(await tool.locator('summary').innerText(), /grep -rn redirect src\//);
    assert.equal(await tool.getAttribute('open'), null, 'tool calls are collapsed');
    await page.locator('details.result', { hasText: 'tool result' }).waitFor();
    await page.locator('details.raw', { hasText: 'file-history-snapshot' }).waitFor();
    await page.getByText('Summary: Fix the login redirect').waitFor();
    await page.screenshot({ path: path.join(SHOTS, 'session-log.png'), fullPage: true });
    appendFileSync(
      file,
      JSON.stringify({
        type: 'assistant',
        message: { role: 'assistant', content: [{ type: 'text', text: 'Pushed the fix.' }] },
        timestamp: '2026-11-24T10:01:00.000Z',
      }) + '\n',
    );
    await page.getByText('Pushed the fix.').waitFor({ timeout: 30_000 });
    await page.close();
  });

  it('refuses a javascript: link at launch, and every page runs under its CSP without a violation', async () => {
    const before = (await api(hub.url, 'GET', '/api/thopters')).body.thopters.length;
    for (const url of ['javascript:alert(document.cookie)', 'data:text/html,<script>alert(1)</script>']) {
      const res = await api(hub.url, 'POST', '/api/thopters', { repository: origin, title: 'Evil', url });
      assert.equal(res.status, 400, JSON.stringify(res.body));
      assert.equal(res.body.error.field, 'url');
      assert.match(res.body.error.message, /url: must be an http\(s\) URL/);
    }
    assert.equal(
      (await api(hub.url, 'GET', '/api/thopters')).body.thopters.length,
      before,
      'nothing launched',
    );

    const auth = { authorization: `Bearer ${TOKEN}` };
    for (const p of [
      '/',
      '/login',
      `/thopters/${running}`,
      `/thopters/${running}/terminal`,
      `/thopters/${running}/log`,
      '/thopters/thopter-000000000000',
      '/admin/queues',
      '/assets/dashboard.js',
    ]) {
      const res = await fetch(`${hub.url}${p}`, { headers: auth });
      await res.arrayBuffer();
      const csp = res.headers.get('content-security-policy') ?? '';
      assert.match(csp, /frame-ancestors 'none'/, `${p} (${res.status}) has a CSP`);
      assert.match(csp, /script-src 'self'(;|$)/, `${p}: scripts from the hub's files only`);
    }

    // The pages in use: the main page, a thopter, its terminal and session log, Bull Board.
    const page = await context.newPage();
    await page.goto(`${hub.url}/`);
    await card(page, running).waitFor();
    await card(page, running).locator('a.title').click();
    await page.locator('pre.screen').waitFor();
    await page.goto(`${hub.url}/thopters/${running}/terminal`);
    await page.locator('#terminal[data-connected="true"]').waitFor();
    await page.goto(`${hub.url}/thopters/${running}/log`);
    await page.getByText('Pushed the fix.').waitFor();
    await page.goto(`${hub.url}/admin/queues`);
    await page.getByText('thopters', { exact: true }).first().waitFor();
    await page.close();
    assert.deepEqual(cspViolations, [], 'no page needed anything its CSP blocks');
  });

  it('shows several thopters in their states (screenshots), on a desktop and a phone', async () => {
    const page = await context.newPage();
    await page.goto(`${hub.url}/`);
    const notARepo = path.join(world.dir, 'not-a-repo');
    writeFixture(notARepo, 'file.txt', 'no git here');
    const failing = await launch('Doomed: not a repository', notARepo);
    await page.locator('#recent').getByText('Doomed: not a repository').waitFor({ timeout: 90_000 });
    writeFileSync(holdFile, '');
    const held = await launch('Add dark mode');
    const queued: string[] = [];
    try {
      await card(page, held).getByText('phase post-checkout').waitFor({ timeout: 60_000 });
      // Two machines busy (MAX_THOPTERS=2): these two wait in line.
      queued.push(await launch('Upgrade the build'), await launch('Write the changelog'));
      await card(page, queued[1]!).getByText('#2 in line').waitFor({ timeout: 60_000 });
      await page.locator('#queue li', { hasText: 'Upgrade the build' }).waitFor();
      await page.screenshot({ path: path.join(SHOTS, 'main.png'), fullPage: true });
      const phone = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true });
      await phone.context().addCookies(await context.cookies());
      await phone.goto(`${hub.url}/`);
      await card(phone, held).waitFor();
      const overflow = await phone.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
      assert.ok(overflow <= 1, `the phone page scrolls sideways by ${overflow}px`);
      await phone.screenshot({ path: path.join(SHOTS, 'main-phone.png'), fullPage: true });
      await phone.close();
      await page.goto(`${hub.url}/thopters/${running}`);
      await page.screenshot({ path: path.join(SHOTS, 'thopter.png'), fullPage: true });
      await page.goto(`${hub.url}/thopters/${failing}`);
      await page.locator('.phase.failed', { hasText: 'clone-repo' }).waitFor();
      await page.close();
    } finally {
      for (const id of [...queued, held]) await api(hub.url, 'DELETE', `/api/thopters/${id}`);
      rmSync(holdFile, { force: true });
    }
  });

  it('kills a thopter after a confirmation: it leaves the page and its workspace is gone', async () => {
    const page = await context.newPage();
    await page.goto(`${hub.url}/`);
    const t = (await hub.store.get(running))!;
    const machine = path.join(world.dir, 'data', 'thopters', t.machine!.id);
    assert.ok(existsSync(machine));
    const dialogs: string[] = [];
    page.on('dialog', (d) => {
      dialogs.push(d.message());
      void (dialogs.length === 1 ? d.dismiss() : d.accept());
    });
    await card(page, running).getByRole('button', { name: 'Kill' }).click();
    assert.match(dialogs[0] ?? '', /Kill the thopter working on “Fix the login redirect”/);
    assert.equal((await hub.store.get(running))!.destroyRequested, undefined, 'dismissed: nothing happens');
    await card(page, running).getByRole('button', { name: 'Kill' }).click();
    await card(page, running).waitFor({ state: 'detached', timeout: 60_000 });
    const ended = page.locator('#recent li', { hasText: 'Fix the login redirect' });
    await ended.waitFor();
    await waitFor('the workspace to be gone', () => !existsSync(machine));
    await waitFor('the reason in the recent list', async () =>
      (await ended.innerText()).includes('killed from the dashboard'),
    );
    assert.equal((await hub.store.get(running))!.endReason, 'killed from the dashboard');
    await page.goto(`${hub.url}/thopters/${running}`);
    const facts = await page.locator('dl.facts').innerText();
    assert.match(facts, /Last session\s+seen \w+ at .*the machine is gone/);
    assert.doesNotMatch(facts, /agent running/, 'no agent runs on a machine that is gone');
    await page.close();
  });

  it('shows a running thopter whose session is gone as stopped, not active', async () => {
    const id = await launch('Lose the session');
    const page = await context.newPage();
    await page.goto(`${hub.url}/`);
    await card(page, id).and(page.locator('[data-condition="active"]')).waitFor({ timeout: 90_000 });
    const t = (await hub.store.get(id))!;
    execFileSync('tmux', ['kill-server'], {
      env: { ...process.env, TMUX_TMPDIR: path.join(world.dir, 'data', 'thopters', t.machine!.id, 'tmux') },
    });
    const stopped = card(page, id).and(page.locator('[data-condition="stopped"]'));
    await stopped.waitFor({ timeout: 60_000 });
    assert.equal(await stopped.locator('.badge').innerText(), 'STOPPED');
    await page.goto(`${hub.url}/thopters/${id}`);
    assert.equal(await page.locator('#detail h1 .badge').innerText(), 'STOPPED');
    await page.close();
    await api(hub.url, 'DELETE', `/api/thopters/${id}`);
    await waitFor('the thopter destroyed', async () => (await hub.store.get(id))?.state === 'destroyed');
  });

  it('refuses a cross-site POST without the CSRF token, and a websocket from another origin', async () => {
    const target = await launch('A target for forgeries');
    await waitFor('the target to run', async () => (await hub.store.get(target))?.state === 'running', {
      timeoutMs: 60_000,
    });
    // Another site on this machine (another port: the same "site" for SameSite, so the browser
    // does send the cookie; only the CSRF token and the Origin check stand in the way).
    const evil: Server = createServer((req, res) => {
      res.setHeader('content-type', 'text/html');
      res.end(`<!doctype html><form id="f" method="post" action="${hub.url}/api/intake/pause"></form>
        <script>
          const ws = new WebSocket('${hub.url.replace('http', 'ws')}/thopters/${target}/terminal/ws');
          ws.onopen = () => (window.result = 'opened');
          ws.onerror = () => (window.result = 'refused');
        </script>`);
    });
    await new Promise<void>((r) => evil.listen(0, '127.0.0.1', r));
    const evilUrl = `http://127.0.0.1:${(evil.address() as { port: number }).port}/`;
    try {
      const page = await context.newPage();
      await page.goto(evilUrl);
      await page.waitForFunction(() => (window as any).result !== undefined);
      assert.equal(await page.evaluate(() => (window as any).result), 'refused');
      const [response] = await Promise.all([
        page.waitForResponse((r) => r.url().endsWith('/api/intake/pause')),
        page.evaluate(() => (document.getElementById('f') as HTMLFormElement).submit()),
      ]);
      assert.equal(response.status(), 403);
      assert.match(await response.text(), /did not come from the dashboard/);
      await page.close();
      const intake = await api(hub.url, 'GET', '/api/intake');
      assert.equal(intake.body.paused, false, 'the forged pause changed nothing');

      // The same from the dashboard itself works: the page sends its CSRF token.
      const own = await context.newPage();
      await own.goto(`${hub.url}/`);
      await own.getByRole('button', { name: 'Pause' }).click();
      await own.getByText('Paused').waitFor();
      await own.getByRole('button', { name: 'Resume' }).click();
      await own.getByText('Accepting launches').waitFor();
      await own.close();
    } finally {
      evil.close();
      await api(hub.url, 'DELETE', `/api/thopters/${target}`);
    }
    await waitFor('the target to end', async () => (await hub.store.get(target))?.state === 'destroyed', {
      timeoutMs: 60_000,
    });
  });
});
