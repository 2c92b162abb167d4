import { createPrivateKey } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { DEFAULT_PRICES, parsePrices, type PriceTable } from './usage/prices.js';

/** The repository's own folder: prompts/ and thopter/ ship beside src/. */
export const PROJECT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export const DEFAULT_AGENT_COMMAND =
  'claude --dangerously-skip-permissions "read ./prompt.md for your instructions"';

/**
 * Whether a URL is http(s) with a host. Anything else (`javascript:`, `data:`, `file:`) must never
 * reach a link or a client: a `javascript:` link runs script in the hub's origin when clicked.
 */
export function isHttpUrl(value: string): boolean {
  // The URL parser trims and drops whitespace that the raw value would still carry.
  if (/\s/.test(value)) return false;
  try {
    const url = new URL(value);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.hostname !== '';
  } catch {
    return false;
  }
}

/**
 * A duration: `90s`, `30m`, `2h`, `1d`, or a plain number of seconds. `0`, `off` or empty turns it off
 * (undefined). Returned in milliseconds.
 */
export function parseDuration(raw: string): number | undefined | Error {
  const text = raw.trim().toLowerCase();
  if (text === '' || text === '0' || text === 'off' || text === 'none') return undefined;
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/.exec(text);
  if (!m)
    return new Error(`"${raw}" is not a duration: write it like 90s, 30m, 2h or 1d (or 0 to turn it off)`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] ?? 's'] ?? 1000;
  return Math.round(Number(m[1]) * unit);
}

const duration = (fallback: string) =>
  z
    .string()
    .default(fallback)
    .transform((raw, ctx) => {
      const parsed = parseDuration(raw);
      if (parsed instanceof Error) {
        ctx.addIssue({ code: 'custom', message: parsed.message });
        return z.NEVER;
      }
      return parsed;
    });

/** A duration that must be on (positive). */
const requiredDuration = (fallback: string) =>
  duration(fallback).refine((v): v is number => v !== undefined && v > 0, 'must be a positive duration');

const int = (fallback: number, min: number, max: number) =>
  z
    .string()
    .default(String(fallback))
    .transform((raw, ctx) => {
      const n = Number(raw.trim());
      if (!Number.isInteger(n) || n < min || n > max) {
        ctx.addIssue({ code: 'custom', message: `must be a whole number from ${min} to ${max}` });
        return z.NEVER;
      }
      return n;
    });

const optionalText = z
  .string()
  .optional()
  .transform((v) => (v === undefined || v.trim() === '' ? undefined : v.trim()));

/** An amount in USD; unset, `0` or `off` = no limit (undefined). */
const usd = optionalText.transform((raw, ctx) => {
  if (raw === undefined || raw === '0' || raw.toLowerCase() === 'off') return undefined;
  const n = Number(raw.replace(/^\$/, ''));
  if (!Number.isFinite(n) || n <= 0) {
    ctx.addIssue({
      code: 'custom',
      message: `"${raw}" is not an amount in USD: write it like 5 or 12.50 (0 = no limit)`,
    });
    return z.NEVER;
  }
  return n;
});

const existingFile = optionalText.refine(
  (p) => p === undefined || (existsSync(p) && statSync(p).isFile()),
  'names a file that does not exist: fix the path or unset it',
);

/** Per-repository settings, in the seed's GITHUB_INTEGRATION_JSON format. */
const repositorySettings = z.object({
  issuesPAT: z.string().optional(),
  agentCoderPAT: z.string().optional(),
  userName: z.string().optional(),
  userEmail: z.string().optional(),
  /** Overrides THOPTER_PULL_REQUEST for this repository. */
  pullRequest: z.enum(['draft', 'ready', 'off']).optional(),
  /** false: a pull request says `Refs #N`, so merging it leaves the issue open. Default true. */
  closeIssue: z.boolean().optional(),
  /** USD this repository's thopters may spend a UTC day; overrides THOPTER_DAILY_BUDGET_USD_PER_REPOSITORY. */
  dailyBudgetUsd: z.number().positive().finite().optional(),
});

const githubIntegration = optionalText.transform((raw, ctx) => {
  if (raw === undefined) return { repositories: {} as Record<string, z.infer<typeof repositorySettings>> };
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    ctx.addIssue({ code: 'custom', message: 'is not valid JSON' });
    return z.NEVER;
  }
  const parsed = z
    .object({ repositories: z.record(z.string().regex(/^[\w.-]+\/[\w.-]+$/), repositorySettings) })
    .safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    ctx.addIssue({
      code: 'custom',
      message: `must look like {"repositories": {"owner/repo": {"issuesPAT": "...", "agentCoderPAT": "...", "userName": "...", "userEmail": "..."}}} (${issue?.path.join('.')}: ${issue?.message})`,
    });
    return z.NEVER;
  }
  return parsed.data;
});

/**
 * Fly's machine size presets (what `fly machine run --vm-size` accepts), as the Machines API's
 * `guest` object wants them.
 */
export const VM_SIZES: Record<
  string,
  { cpu_kind: 'shared' | 'performance'; cpus: number; memory_mb: number }
> = {
  'shared-cpu-1x': { cpu_kind: 'shared', cpus: 1, memory_mb: 256 },
  'shared-cpu-2x': { cpu_kind: 'shared', cpus: 2, memory_mb: 512 },
  'shared-cpu-4x': { cpu_kind: 'shared', cpus: 4, memory_mb: 1024 },
  'shared-cpu-8x': { cpu_kind: 'shared', cpus: 8, memory_mb: 2048 },
  'performance-1x': { cpu_kind: 'performance', cpus: 1, memory_mb: 2048 },
  'performance-2x': { cpu_kind: 'performance', cpus: 2, memory_mb: 4096 },
  'performance-4x': { cpu_kind: 'performance', cpus: 4, memory_mb: 8192 },
  'performance-8x': { cpu_kind: 'performance', cpus: 8, memory_mb: 16384 },
  'performance-16x': { cpu_kind: 'performance', cpus: 16, memory_mb: 32768 },
};

/** Whole words a token made of only them (and digits, punctuation) is guessed from. */
const COMMON_WORDS =
  /^(?:password|passwd|passphrase|changeme|secret|token|admin|root|letmein|qwerty|welcome|default|example|hub|api|key|test|thopter)+$/;
export const MIN_TOKEN_LENGTH = 20;

/** Why HUB_API_TOKEN is easy to guess, or undefined when it is not. */
export function weakTokenReason(token: string): string | undefined {
  if (token.length < MIN_TOKEN_LENGTH) {
    return `is too short (${token.length} characters): use at least ${MIN_TOKEN_LENGTH}`;
  }
  if (new Set(token).size < 6) return 'repeats a few characters: use a random one';
  const letters = token.toLowerCase().replace(/[^a-z]/g, '');
  if (/changeme|password/i.test(token) || (letters !== '' && COMMON_WORDS.test(letters))) {
    return 'is made of common words: use a random one';
  }
  return undefined;
}

const fields = z.object({
  DATA_DIR: z.string().default('./data'),
  REDIS_URL: optionalText.refine(
    (v) => v === undefined || /^(rediss?|unix):\/\//.test(v),
    'must start with redis://, rediss:// or unix:// (or be unset to run an embedded redis-server)',
  ),
  HUB_REDIS_PREFIX: z
    .string()
    .default('thopter')
    .refine((v) => /^[\w-]+$/.test(v), 'may hold only letters, digits, - and _'),
  HUB_HOST: z.string().default('127.0.0.1'),
  HUB_PORT: int(8080, 0, 65535),
  HUB_REQUEST_TIMEOUT: requiredDuration('30s'),
  HUB_MAX_UNAUTHENTICATED_CONNECTIONS: int(1000, 1, 1_000_000),
  HUB_PUBLIC_URL: optionalText.refine(
    (v) => v === undefined || isHttpUrl(v),
    'must be an http:// or https:// URL',
  ),
  HUB_API_TOKEN: optionalText.superRefine((v, ctx) => {
    const weak = v === undefined ? undefined : weakTokenReason(v);
    if (weak) {
      ctx.addIssue({
        code: 'custom',
        message: `${weak}: make one with \`openssl rand -hex 32\` (or unset it and the hub generates one)`,
      });
    }
  }),
  HUB_AUTH_FAILURE_LIMIT: z
    .string()
    .default('10:200')
    .refine(
      (v) => /^\d+:\d+$/.test(v) && Number(v.split(':')[0]) >= 1 && Number(v.split(':')[1]) >= 1,
      'must be PER_ADDRESS:TOTAL, the wrong tokens allowed a minute from one client address and from all, e.g. 10:200',
    ),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  MAX_THOPTERS: int(10, 1, 10_000),
  THOPTER_PROVIDER: z.enum(['local', 'fly']).default('local'),
  THOPTER_AGENT_COMMAND: z
    .string()
    .default(DEFAULT_AGENT_COMMAND)
    .refine((v) => v.trim() !== '' && !/[\r\n]/.test(v), 'must be one non-empty line'),
  THOPTER_AGENT_SETTLE: requiredDuration('3s'),
  THOPTER_IDLE_TIMEOUT: duration('0'),
  THOPTER_MAX_LIFETIME: duration('0'),
  THOPTER_SAVE_TIMEOUT: requiredDuration('60s').refine(
    (v) => v <= 60_000,
    'must be at most 60s: a save never holds a teardown longer',
  ),
  THOPTER_KEEP_FAILED: z.enum(['true', 'false', '1', '0']).default('false'),
  THOPTER_KEEP_FAILED_TIMEOUT: requiredDuration('2h'),
  THOPTER_IDLE_AFTER: requiredDuration('60s'),
  THOPTER_STATUS_INTERVAL: requiredDuration('3s'),
  THOPTER_STALL_AFTER: duration('15m'),
  THOPTER_RETENTION: duration('30d'),
  THOPTER_MAX_COST_USD: usd,
  THOPTER_DAILY_BUDGET_USD_PER_REPOSITORY: usd,
  THOPTER_DAILY_BUDGET_USD_PER_PERSON: usd,
  THOPTER_LOCAL_REPOSITORIES: optionalText.transform((raw, ctx) => {
    const roots = (raw ?? '')
      .split(/[:,]/)
      .map((r) => r.trim())
      .filter(Boolean);
    const bad = roots.find((r) => !path.isAbsolute(r) || !existsSync(r) || !statSync(r).isDirectory());
    if (bad !== undefined) {
      ctx.addIssue({
        code: 'custom',
        message: `names "${bad}", which is not an absolute path of a folder: list existing folders separated by : or , (e.g. /srv/git:/home/me/src)`,
      });
      return z.NEVER;
    }
    return roots;
  }),
  THOPTER_ENV_FILE: existingFile,
  THOPTER_POST_CHECKOUT_SCRIPT: existingFile,
  PROMPTS_DIR: z.string().default(path.join(PROJECT_DIR, 'prompts')),
  GITHUB_INTEGRATION_JSON: githubIntegration,
  THOPTER_PULL_REQUEST: z.enum(['draft', 'ready', 'off']).default('draft'),
  GITHUB_API_URL: z
    .string()
    .default('https://api.github.com')
    .refine((v) => isHttpUrl(v), 'must be an http(s) URL, e.g. https://github.example.com/api/v3'),
  GITHUB_ISSUES_POLLING_INTERVAL: int(30, 1, 86_400),
  GITHUB_COLD_START_LOOKBACK: requiredDuration('24h'),
  GITHUB_WEBHOOK_SECRET: optionalText,
  GITHUB_INCLUDE_PULL_REQUESTS: z.enum(['true', 'false']).default('false'),
  GITHUB_DESTROY_ON_CLOSE: z.enum(['true', 'false']).default('true'),
  GITHUB_QUEUE_REFRESH_INTERVAL: requiredDuration('60s'),
  GITHUB_APP_ID: optionalText.refine(
    (v) => v === undefined || /^\d+$/.test(v),
    "must be the App's numeric ID, shown on its settings page (About: App ID)",
  ),
  GITHUB_APP_PRIVATE_KEY: optionalText,
  GITHUB_APP_PRIVATE_KEY_FILE: existingFile,
  GITHUB_APP_SLUG: optionalText.refine(
    (v) => v === undefined || /^[a-z0-9][a-z0-9-]*$/.test(v),
    "must be the App's slug, the last part of its public page https://github.com/apps/SLUG",
  ),
  GITHUB_APP_TOKEN_RENEW_BEFORE: requiredDuration('10m').refine(
    (v) => v < 3_600_000,
    'must be less than 1h, the life of an installation token',
  ),
  HUB_LOCK_DURATION: requiredDuration('30s'),
  HUB_STALLED_INTERVAL: requiredDuration('15s'),
  HUB_PHASE_CONCURRENCY: int(20, 1, 1000),
  HUB_DESTROY_CONCURRENCY: int(10, 1, 1000),
  HUB_STATUS_URL: optionalText.refine(
    (v) => v === undefined || isHttpUrl(v),
    'must be an http(s) URL at which thopters reach the hub, e.g. http://hub.internal:8080',
  ),
  FLY_API_URL: z
    .string()
    .default('https://api.machines.dev')
    .refine((v) => isHttpUrl(v), 'must be an http(s) URL, e.g. https://api.machines.dev'),
  FLY_API_TOKEN: optionalText,
  FLY_API_RATE: z
    .string()
    .default('1:3')
    .refine(
      (v) =>
        v === 'off' ||
        (/^\d+(\.\d+)?:\d+$/.test(v) && Number(v.split(':')[0]) > 0 && Number(v.split(':')[1]) >= 1),
      "must be REQUESTS_PER_SECOND:BURST per action, e.g. 1:3 (Fly's documented limit), or off",
    ),
  FLY_DEPLOY_KEY: optionalText,
  APP_NAME: optionalText.refine(
    (v) => v === undefined || /^[a-z0-9][a-z0-9-]{0,62}$/.test(v),
    'must be a Fly app name: lowercase letters, digits and dashes',
  ),
  REGION: optionalText.refine(
    (v) => v === undefined || /^[a-z]{3}$/.test(v),
    'must be a Fly region code such as ord, iad or ams',
  ),
  THOPTER_IMAGE: optionalText,
  THOPTER_VM_SIZE: z
    .string()
    .default('shared-cpu-1x')
    .refine((v) => v in VM_SIZES, `must be one of ${Object.keys(VM_SIZES).join(', ')}`),
  THOPTER_VM_MEMORY: optionalText.refine(
    (v) => v === undefined || (/^\d+$/.test(v) && Number(v) >= 256 && Number(v) % 256 === 0),
    'must be a number of megabytes, a multiple of 256 (e.g. 2048)',
  ),
  THOPTER_VOLUME_SIZE: int(10, 1, 500),
  THOPTER_SSH_HOST: z
    .string()
    .default('{id}.vm.{app}.internal')
    .refine(
      (v) => /\{(id|private_ip)\}/.test(v),
      'must contain {id} or {private_ip}, e.g. {id}.vm.{app}.internal',
    ),
  THOPTER_SSH_PORT: int(2222, 1, 65535),
  DANGEROUSLY_SKIP_FIREWALL: optionalText,
  ALLOWED_DOMAINS: optionalText,
  THOPTER_PRICES: optionalText.transform((raw, ctx) => {
    if (raw === undefined) return undefined;
    const prices = parsePrices(raw);
    if (prices instanceof Error) {
      ctx.addIssue({ code: 'custom', message: prices.message });
      return z.NEVER;
    }
    return prices;
  }),
  THOPTER_PRICES_FILE: existingFile.transform((file, ctx) => {
    if (file === undefined) return undefined;
    const prices = parsePrices(readFileSync(file, 'utf8'));
    if (prices instanceof Error) {
      ctx.addIssue({ code: 'custom', message: `(${file}) ${prices.message}` });
      return z.NEVER;
    }
    return prices;
  }),
});

/**
 * The App's private key, from GITHUB_APP_PRIVATE_KEY (with `\\n` for line breaks, as .env files
 * hold it) or the file GITHUB_APP_PRIVATE_KEY_FILE names; a problem otherwise, which never quotes the key.
 */
function appPrivateKey(c: { GITHUB_APP_PRIVATE_KEY?: string; GITHUB_APP_PRIVATE_KEY_FILE?: string }) {
  const pem =
    c.GITHUB_APP_PRIVATE_KEY ??
    (c.GITHUB_APP_PRIVATE_KEY_FILE && readFileSync(c.GITHUB_APP_PRIVATE_KEY_FILE, 'utf8'));
  if (!pem)
    return {
      problem:
        "is needed with GITHUB_APP_ID: set it to the App's private key (the .pem generated on its settings page), or GITHUB_APP_PRIVATE_KEY_FILE to that file's path",
    };
  const text = pem.replace(/\\n/g, '\n').trim() + '\n';
  try {
    const key = createPrivateKey(text);
    if (key.asymmetricKeyType !== 'rsa') throw new Error('not RSA');
  } catch {
    return {
      problem:
        'is not a PEM private key (-----BEGIN RSA PRIVATE KEY----- ...): use the .pem file GitHub generated for the App (Settings > Developer settings > GitHub Apps > the App > Private keys), whole',
    };
  }
  return { pem: text };
}

const schema = fields.superRefine((c, ctx) => {
  const keyName =
    c.GITHUB_APP_PRIVATE_KEY_FILE !== undefined && c.GITHUB_APP_PRIVATE_KEY === undefined
      ? 'GITHUB_APP_PRIVATE_KEY_FILE'
      : 'GITHUB_APP_PRIVATE_KEY';
  if (c.GITHUB_APP_ID !== undefined) {
    const key = appPrivateKey(c);
    if (key.problem) ctx.addIssue({ code: 'custom', path: [keyName], message: key.problem });
  } else if (c.GITHUB_APP_PRIVATE_KEY !== undefined || c.GITHUB_APP_PRIVATE_KEY_FILE !== undefined) {
    ctx.addIssue({
      code: 'custom',
      path: ['GITHUB_APP_ID'],
      message: `is needed with ${keyName}: the App's numeric ID, shown on its settings page`,
    });
  }
  if (c.THOPTER_PROVIDER !== 'fly') return;
  const need = (name: keyof typeof c, message: string) => {
    if (c[name] === undefined) ctx.addIssue({ code: 'custom', path: [name], message });
  };
  if (c.FLY_API_TOKEN === undefined && c.FLY_DEPLOY_KEY === undefined) {
    ctx.addIssue({
      code: 'custom',
      path: ['FLY_API_TOKEN'],
      message: 'is needed with THOPTER_PROVIDER=fly: create one with `fly tokens create deploy -a APP_NAME`',
    });
  }
  need('APP_NAME', 'is needed with THOPTER_PROVIDER=fly: the Fly app the thopter machines belong to');
  need('REGION', 'is needed with THOPTER_PROVIDER=fly: the Fly region for machines and volumes, e.g. ord');
});

export type RepositorySettings = z.infer<typeof repositorySettings>;

export interface Config {
  dataDir: string;
  redisUrl: string | undefined;
  redisPrefix: string;
  host: string;
  port: number;
  /**
   * ms a client has to send a whole request, headers and body (default 30 s; Node's own is 300 s):
   * a sender that trickles its body is cut off with a 408. Headers get at most 10 s of it.
   */
  requestTimeoutMs: number;
  /**
   * Open connections that have not yet carried an authenticated request (default 1000); past it the
   * oldest of them is closed.
   */
  maxUnauthenticatedConnections: number;
  publicUrl: string | undefined;
  apiToken: string | undefined;
  /** Wrong tokens allowed a minute per client address and from all addresses together. */
  authFailureLimit: { perAddress: number; total: number };
  logLevel: string;
  maxThopters: number;
  provider: 'local' | 'fly';
  agentCommand: string;
  /** ms the agent must keep running after launch-agent typed it, for the phase to succeed (3 s). */
  agentSettleMs: number;
  /** ms; undefined = never destroy an idle thopter. */
  idleTimeoutMs: number | undefined;
  /** ms; undefined = no limit on a thopter's life. */
  maxLifetimeMs: number | undefined;
  /** ms the save before a teardown may take; then the teardown goes on without it (60 s, the most). */
  saveTimeoutMs: number;
  /** ms a thopter whose provisioning failed keeps its machine for a look; undefined = destroy it at once. */
  keepFailedMs: number | undefined;
  /** ms without a screen change after which a session counts as idle (seed: 60 s). */
  idleAfterMs: number;
  /** ms between status checks of a running thopter (seed: 3 s). */
  statusIntervalMs: number;
  /**
   * ms an agent may stay mid-turn with no progress (transcript and screen unchanged) before it is
   * reported stalled (15 min); undefined = never.
   */
  stallAfterMs: number | undefined;
  /**
   * How long an ended thopter's record, events and kept transcripts stay in Redis after it ended
   * (THOPTER_RETENTION, 30 days); undefined = forever. Usage totals are kept regardless.
   */
  retentionMs: number | undefined;
  /**
   * USD one thopter may spend (THOPTER_MAX_COST_USD): at 90 % its agent is told to wrap up, at
   * 100 % it is saved and ended with reason budget. Undefined = no cap.
   */
  maxCostUsd: number | undefined;
  /**
   * USD a UTC day's thopters may spend, per repository (a repository's own `dailyBudgetUsd` first)
   * and per person who asked: a launch past either is refused until the next UTC midnight.
   */
  dailyBudgetUsd: { perRepository: number | undefined; perPerson: number | undefined };
  /**
   * THOPTER_LOCAL_REPOSITORIES: the folders under which a launch may name a path on the hub's
   * machine as its repository (local provider only). Empty (the default) = no local paths.
   */
  localRepositories: string[];
  envFile: string | undefined;
  postCheckoutScript: string | undefined;
  promptsDir: string;
  repositories: Record<string, RepositorySettings>;
  /**
   * THOPTER_PULL_REQUEST: whether a work branch with commits gets a pull request, and whether it
   * opens as a draft (default `draft`); a repository's `pullRequest` overrides it.
   */
  pullRequest: 'draft' | 'ready' | 'off';
  github: {
    apiUrl: string;
    /** Seconds between polls (seed: 30). */
    pollIntervalS: number;
    /** How far back the first poll of a repository looks, in ms. */
    coldStartLookbackMs: number;
    /** Enables POST /github/webhook. */
    webhookSecret: string | undefined;
    includePullRequests: boolean;
    destroyOnClose: boolean;
    /** ms between refreshes of queued thopters' comments (their place in line). */
    queueRefreshMs: number;
    /** GITHUB_APP_ID and its key: intake with installation tokens, every installed repository watched. */
    app: GitHubAppConfig | undefined;
  };
  lockDurationMs: number;
  stalledIntervalMs: number;
  phaseConcurrency: number;
  destroyConcurrency: number;
  /** Where thopters post their status: HUB_STATUS_URL, else HUB_PUBLIC_URL, else the listen address. */
  statusUrl: string;
  /** Passed to every thopter machine (seed phase 2). */
  machineEnv: {
    skipFirewall: string | undefined;
    allowedDomains: string | undefined;
  };
  fly: FlyConfig;
  /**
   * USD per million tokens by model, for usage: Claude Code's own model prices (usage/prices.ts)
   * with THOPTER_PRICES or THOPTER_PRICES_FILE applied over them.
   */
  prices: PriceTable;
}

export interface GitHubAppConfig {
  id: string;
  /** PEM, with real line breaks. */
  privateKey: string;
  /** GITHUB_APP_SLUG; asked of GitHub (`GET /app`) when unset. Its comments are `{slug}[bot]`'s. */
  slug: string | undefined;
  /** ms before its expiry a thopter's token is replaced (GITHUB_APP_TOKEN_RENEW_BEFORE, 10 min). */
  renewBeforeMs: number;
}

export interface FlyConfig {
  apiUrl: string;
  /** FLY_API_TOKEN, or the seed's FLY_DEPLOY_KEY. */
  token: string | undefined;
  /** How the hub paces its requests per action; undefined = not at all. */
  rate: { perSecond: number; burst: number } | undefined;
  app: string;
  region: string;
  /** THOPTER_IMAGE; when unset the image is read from the hub's Redis (seed: the metadata service). */
  image: string | undefined;
  guest: { cpu_kind: 'shared' | 'performance'; cpus: number; memory_mb: number };
  volumeSizeGb: number;
  /** Where the hub's SSH reaches a machine: {id}, {app} and {private_ip} are filled in. */
  sshHost: string;
  sshPort: number;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`The hub's configuration is not valid:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/** Pure: reads only `env`. Throws ConfigError naming every bad variable and how to fix it. */
export function loadConfig(env: Record<string, string | undefined>): Config {
  const input = Object.fromEntries(
    Object.keys(fields.shape).map((k) => [k, env[k] === '' ? undefined : env[k]]),
  );
  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((i) => {
        const name = String(i.path[0] ?? '');
        const given = env[name];
        const message =
          i.code === 'invalid_value' && 'values' in i
            ? `must be one of ${(i.values as unknown[]).join(', ')}`
            : i.message;
        return `${name} ${message}${given !== undefined && !/TOKEN|JSON|PAT|SECRET|REDIS_URL|KEY/.test(name) ? ` (got "${given}")` : ''}: set it in .env or the environment (see .env.example)`;
      }),
    );
  }
  const c = parsed.data;
  if (c.THOPTER_PRICES && c.THOPTER_PRICES_FILE) {
    throw new ConfigError([
      'THOPTER_PRICES and THOPTER_PRICES_FILE are both set: keep one of them (see .env.example)',
    ]);
  }
  return {
    dataDir: path.resolve(c.DATA_DIR),
    redisUrl: c.REDIS_URL,
    redisPrefix: c.HUB_REDIS_PREFIX,
    host: c.HUB_HOST,
    port: c.HUB_PORT,
    requestTimeoutMs: c.HUB_REQUEST_TIMEOUT,
    maxUnauthenticatedConnections: c.HUB_MAX_UNAUTHENTICATED_CONNECTIONS,
    publicUrl: c.HUB_PUBLIC_URL,
    apiToken: c.HUB_API_TOKEN,
    authFailureLimit: {
      perAddress: Number(c.HUB_AUTH_FAILURE_LIMIT.split(':')[0]),
      total: Number(c.HUB_AUTH_FAILURE_LIMIT.split(':')[1]),
    },
    logLevel: c.LOG_LEVEL,
    maxThopters: c.MAX_THOPTERS,
    provider: c.THOPTER_PROVIDER,
    agentCommand: c.THOPTER_AGENT_COMMAND,
    agentSettleMs: c.THOPTER_AGENT_SETTLE,
    idleTimeoutMs: c.THOPTER_IDLE_TIMEOUT,
    maxLifetimeMs: c.THOPTER_MAX_LIFETIME,
    saveTimeoutMs: c.THOPTER_SAVE_TIMEOUT,
    keepFailedMs: ['true', '1'].includes(c.THOPTER_KEEP_FAILED) ? c.THOPTER_KEEP_FAILED_TIMEOUT : undefined,
    idleAfterMs: c.THOPTER_IDLE_AFTER,
    statusIntervalMs: c.THOPTER_STATUS_INTERVAL,
    stallAfterMs: c.THOPTER_STALL_AFTER,
    retentionMs: c.THOPTER_RETENTION,
    maxCostUsd: c.THOPTER_MAX_COST_USD,
    dailyBudgetUsd: {
      perRepository: c.THOPTER_DAILY_BUDGET_USD_PER_REPOSITORY,
      perPerson: c.THOPTER_DAILY_BUDGET_USD_PER_PERSON,
    },
    localRepositories: c.THOPTER_LOCAL_REPOSITORIES,
    envFile: c.THOPTER_ENV_FILE,
    postCheckoutScript: c.THOPTER_POST_CHECKOUT_SCRIPT,
    promptsDir: path.resolve(c.PROMPTS_DIR),
    repositories: c.GITHUB_INTEGRATION_JSON.repositories,
    pullRequest: c.THOPTER_PULL_REQUEST,
    github: {
      apiUrl: c.GITHUB_API_URL.replace(/\/+$/, ''),
      pollIntervalS: c.GITHUB_ISSUES_POLLING_INTERVAL,
      coldStartLookbackMs: c.GITHUB_COLD_START_LOOKBACK,
      webhookSecret: c.GITHUB_WEBHOOK_SECRET,
      includePullRequests: c.GITHUB_INCLUDE_PULL_REQUESTS === 'true',
      destroyOnClose: c.GITHUB_DESTROY_ON_CLOSE === 'true',
      queueRefreshMs: c.GITHUB_QUEUE_REFRESH_INTERVAL,
      app:
        c.GITHUB_APP_ID === undefined
          ? undefined
          : {
              id: c.GITHUB_APP_ID,
              privateKey: appPrivateKey(c).pem!,
              slug: c.GITHUB_APP_SLUG,
              renewBeforeMs: c.GITHUB_APP_TOKEN_RENEW_BEFORE,
            },
    },
    lockDurationMs: c.HUB_LOCK_DURATION,
    stalledIntervalMs: c.HUB_STALLED_INTERVAL,
    phaseConcurrency: c.HUB_PHASE_CONCURRENCY,
    destroyConcurrency: c.HUB_DESTROY_CONCURRENCY,
    statusUrl: (
      c.HUB_STATUS_URL ??
      c.HUB_PUBLIC_URL ??
      `http://${c.HUB_HOST.includes(':') ? `[${c.HUB_HOST}]` : c.HUB_HOST}:${c.HUB_PORT}`
    ).replace(/\/+$/, ''),
    machineEnv: {
      skipFirewall: c.DANGEROUSLY_SKIP_FIREWALL,
      allowedDomains: c.ALLOWED_DOMAINS,
    },
    fly: {
      apiUrl: c.FLY_API_URL.replace(/\/+$/, ''),
      token: c.FLY_API_TOKEN ?? c.FLY_DEPLOY_KEY,
      rate:
        c.FLY_API_RATE === 'off'
          ? undefined
          : {
              perSecond: Number(c.FLY_API_RATE.split(':')[0]),
              burst: Number(c.FLY_API_RATE.split(':')[1]),
            },
      app: c.APP_NAME ?? '',
      region: c.REGION ?? '',
      image: c.THOPTER_IMAGE,
      guest: {
        ...VM_SIZES[c.THOPTER_VM_SIZE]!,
        ...(c.THOPTER_VM_MEMORY ? { memory_mb: Number(c.THOPTER_VM_MEMORY) } : {}),
      },
      volumeSizeGb: c.THOPTER_VOLUME_SIZE,
      sshHost: c.THOPTER_SSH_HOST,
      sshPort: c.THOPTER_SSH_PORT,
    },
    prices: c.THOPTER_PRICES ?? c.THOPTER_PRICES_FILE ?? DEFAULT_PRICES,
  };
}
