#!/usr/bin/env node
import { config as loadDotenv } from 'dotenv';
import { ConfigError, loadConfig } from './config.js';
import { startHub } from './hub.js';
import { createLogger } from './log.js';
import { RedisMissingError } from './redis.js';

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
  let hub;
  try {
    hub = await startHub(config, log);
  } catch (err) {
    if (err instanceof RedisMissingError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(69); // EX_UNAVAILABLE
    }
    log.fatal({ err: (err as Error).message }, 'the hub could not start');
    process.exit(1);
  }
  process.stderr.write(`Thopter hub listening on ${hub.url} (Bull Board: ${hub.url}/admin/queues)\n`);
  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping: handing active thopters back');
    await hub.stop();
    log.info('stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
}

void main();
