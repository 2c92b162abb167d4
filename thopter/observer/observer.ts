/**
 * The observer: runs inside a thopter (as the `thopter` user, under pm2) and posts the agent's
 * session status to the hub every few seconds (seed step 18). Built into one file with
 * `npm run build:observer` (thopter/dist/observer.mjs) and run with plain `node`: it needs no
 * node_modules on the machine. Its settings are in config.ts; it logs one line per change.
 */
import { loadObserverConfig, type ObserverConfig } from './config.js';
import { machineSensors } from './machine.js';
import { sendStatus } from './report.js';
import { runObserver } from './run.js';

async function main() {
  const log = (line: string) => process.stdout.write(`${new Date().toISOString()} observer: ${line}\n`);
  let config: ObserverConfig;
  try {
    config = loadObserverConfig(process.env);
  } catch (err) {
    process.stderr.write(`observer: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const stopping = new AbortController();
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      // A second signal means now.
      if (stopping.signal.aborted) process.exit(0);
      log(`${signal}: posting the final status`);
      stopping.abort();
    });
  }
  await runObserver({
    config,
    sensors: machineSensors(config),
    send: sendStatus,
    log,
    stop: stopping.signal,
  });
  // Pooled keep-alive connections would hold the process open for a few seconds more.
  process.exit(0);
}

main().catch((err: unknown) => {
  process.stderr.write(`observer: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
