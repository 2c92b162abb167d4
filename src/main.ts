#!/usr/bin/env node
import { constants } from 'node:os';
import { config as loadDotenv } from 'dotenv';
import { ConfigError, loadConfig } from './config.js';
import { startHub, type Hub } from './hub.js';
import { createLogger } from './log.js';
import { RedisMissingError } from './redis.js';

/** How long a graceful stop may take before the hub exits anyway, naming the step it was in. */
const STOP_BOUND_MS = 20_000;

async function main() {
  loadDotenv({ quiet: true });
  let config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(78); // EX_CONFIG
    }
    throw err;
  }
  const log = createLogger(config.logLevel);

  // Installed before the start, so that a signal during it still ends the process through exit,
  // which stops the embedded redis-server (it runs in its own session and gets no signal itself).
  let hub: Hub | undefined;
  let step: string | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (hub && step === undefined) return void shutdown(hub, signal);
    // A second signal (or one during the start) means now: active thopters not handed back keep
    // their locks until those expire, then the next hub recovers them as stalled jobs.
    process.stderr.write(
      `${signal}: exiting now${step ? ` (the stop was ${step})` : ''}; the next hub start recovers what was left\n`,
    );
    process.exit(128 + constants.signals[signal]);
  };
  const shutdown = async (running: Hub, signal: NodeJS.Signals) => {
    step = 'beginning';
    log.info({ signal }, 'stopping: handing active thopters back (a second Ctrl-C exits at once)');
    const bound = setTimeout(() => {
      process.stderr.write(
        `the hub did not stop within ${STOP_BOUND_MS / 1000} s (still ${step}): exiting anyway; ` +
          'the next hub start recovers what was left\n',
      );
      process.exit(1);
    }, STOP_BOUND_MS);
    await running.stop((what) => (step = what));
    clearTimeout(bound);
    log.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  try {
    hub = await startHub(config, log);
  } catch (err) {
    if (err instanceof RedisMissingError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(69); // EX_UNAVAILABLE
    }
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
      process.stderr.write(
        `port ${config.port} is in use: set HUB_PORT to a free port, or stop what is listening on it\n`,
      );
      process.exit(69); // EX_UNAVAILABLE
    }
    log.fatal({ err: (err as Error).message }, 'the hub could not start');
    process.exit(1);
  }
  process.stderr.write(`Thopter hub listening on ${hub.url} (Bull Board: ${hub.url}/admin/queues)\n`);
}

void main();
