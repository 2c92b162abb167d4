import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * Secrets must never reach a log line (design.md invariant 5). Code never logs them on purpose;
 * this catches the accidents: any field with one of these names, at any of these depths.
 */
const SECRET_KEYS = [
  'token',
  'apiToken',
  'authorization',
  'Authorization',
  'cookie',
  'password',
  'issuesPAT',
  'agentCoderPAT',
  'HUB_API_TOKEN',
  'GITHUB_INTEGRATION_JSON',
  'FLY_API_TOKEN',
];
export const REDACT_PATHS = [
  ...SECRET_KEYS,
  ...SECRET_KEYS.map((k) => `*.${k}`),
  ...SECRET_KEYS.map((k) => `*.*.${k}`),
  'req.headers.authorization',
  'req.headers.cookie',
];

export function createLogger(
  level: string,
  destination?: NodeJS.WritableStream | { write(msg: string): void },
): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination as NodeJS.WritableStream | undefined,
  );
}
