/**
 * What reading usage costs the hub per check, with a 50 MB transcript (the local provider's hub
 * reads every local thopter's transcripts with each check; the observer does the same inside a Fly
 * machine).
 *
 *   node --import tsx bench/usage.ts            # 50 MB
 *   BENCH_MB=200 node --import tsx bench/usage.ts
 *
 * Writes a transcript shaped like Claude Code's: per model response an assistant line per content
 * block (text, then a tool call), each repeating the message's id and usage, and a user line with
 * the tool's result (a few kB). Then measures the CPU (user + system, process.cpuUsage) of: the
 * first read (the catch-up a hub does after a restart); a check with nothing new; a check after
 * one more response was appended.
 */
import { appendFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { TranscriptUsageReader } from '../src/usage/reader.js';

const MB = Number(process.env.BENCH_MB ?? 50);
const CHECKS = 200;

const dir = mkdtempSync(path.join(os.tmpdir(), 'bench-usage-'));
const projects = path.join(dir, '.claude', 'projects');
const project = path.join(projects, '-data-thopter-workspace');
mkdirSync(project, { recursive: true });
const file = path.join(project, 'session.jsonl');

let n = 0;
/** One model response (two content-block lines) and the tool result that follows it. */
function exchange(): string {
  n++;
  const id = `msg_${n.toString(16).padStart(24, '0')}`;
  const usage = {
    input_tokens: 1200 + n,
    output_tokens: 300,
    cache_read_input_tokens: 40_000,
    cache_creation_input_tokens: 500,
  };
  const base = {
    type: 'assistant',
    sessionId: 'bench',
    requestId: `req_${n}`,
    timestamp: new Date().toISOString(),
  };
  const message = (content: unknown) => ({
    id,
    model: 'claude-opus-5-5',
    role: 'assistant',
    content: [content],
    usage,
  });
  const text = {
    ...base,
    uuid: `a${n}`,
    message: message({ type: 'text', text: 'I will run the tests now. '.repeat(8) }),
  };
  const tool = {
    ...base,
    uuid: `b${n}`,
    message: message({ type: 'tool_use', id: `toolu_${n}`, name: 'Bash', input: { command: 'npm test' } }),
  };
  const result = {
    type: 'user',
    sessionId: 'bench',
    uuid: `c${n}`,
    message: {
      role: 'user',
      content: [{ type: 'tool_result', tool_use_id: `toolu_${n}`, content: 'ok 1 - it works\n'.repeat(180) }],
    },
  };
  return `${JSON.stringify(text)}\n${JSON.stringify(tool)}\n${JSON.stringify(result)}\n`;
}

const chunks: string[] = [];
let size = 0;
while (size < MB * 1024 * 1024) {
  const e = exchange();
  chunks.push(e);
  size += Buffer.byteLength(e);
}
writeFileSync(file, chunks.join(''));
console.log(`transcript: ${(size / 1024 / 1024).toFixed(1)} MB, ${n} responses (${n * 3} lines)`);

const cpuMs = (since: NodeJS.CpuUsage) => {
  const u = process.cpuUsage(since);
  return (u.user + u.system) / 1000;
};

const reader = new TranscriptUsageReader(projects);
let t0 = process.cpuUsage();
let w0 = performance.now();
const totals = await reader.read();
console.log(
  `first read (catch-up): ${cpuMs(t0).toFixed(0)} ms CPU, ${(performance.now() - w0).toFixed(0)} ms wall; ${totals['claude-opus-5-5']!.messages} messages counted`,
);

t0 = process.cpuUsage();
w0 = performance.now();
for (let i = 0; i < CHECKS; i++) await reader.read();
console.log(
  `check, nothing new: ${(cpuMs(t0) / CHECKS).toFixed(3)} ms CPU, ${((performance.now() - w0) / CHECKS).toFixed(3)} ms wall per check`,
);

const appended: string[] = [];
for (let i = 0; i < CHECKS; i++) appended.push(exchange());
let cpu = 0;
let wall = 0;
for (const e of appended) {
  appendFileSync(file, e);
  t0 = process.cpuUsage();
  w0 = performance.now();
  await reader.read();
  cpu += cpuMs(t0);
  wall += performance.now() - w0;
}
const final = await reader.read();
console.log(
  `check after one more response (~${(Buffer.byteLength(appended[0]!) / 1024).toFixed(1)} kB): ${(cpu / CHECKS).toFixed(3)} ms CPU, ${(wall / CHECKS).toFixed(3)} ms wall per check; ${final['claude-opus-5-5']!.messages} messages counted`,
);
rmSync(dir, { recursive: true, force: true });
