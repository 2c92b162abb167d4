import { createSign } from 'node:crypto';
import { createAppAuth } from '@octokit/auth-app';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import type { GitHubAppConfig } from '../config.js';
import { ThopterError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { GitHubClient, octokitPolicies, ThrottledOctokit } from './client.js';

/** What a thopter's token may do: push its work branch and open the finish line's pull request. */
export const THOPTER_TOKEN_PERMISSIONS = { contents: 'write', pull_requests: 'write' } as const;

const installationSchema = z.object({
  id: z.number(),
  account: z.object({ login: z.string() }).nullable(),
  suspended_at: z.string().nullable().optional(),
});
const accessTokenSchema = z.object({ token: z.string(), expires_at: z.string() });

/** Where thopters' git tokens come from (GitHubClients; optional so tests can build hubs without it). */
export interface ThopterTokens {
  /**
   * A token for the thopter's clone and pushes, minted by the App for this repository alone;
   * undefined when the repository has an agentCoderPAT, or is not the App's and `required` is false.
   */
  thopterToken(repository: string, required: boolean): Promise<MintedToken | undefined>;
  /** Revokes a token minted by thopterToken. */
  revokeThopterToken(token: string): Promise<void>;
}

/** A token for one thopter's repository; the token itself is never stored, only handed to the machine. */
export interface MintedToken {
  token: string;
  /** When it expires, on this hub's clock. */
  expiresAt: string;
}

/**
 * The hub as a GitHub App: its JWT (signed here, so the clock GitHub keeps is the one that counts),
 * the installations it can see, a client per installation (installation tokens, cached and renewed
 * by @octokit/auth-app), and the narrow tokens minted for thopters.
 */
export class GitHubApp {
  /** Authenticated as the App itself (JWT): `/app/...` endpoints only. */
  private readonly octokit: InstanceType<typeof ThrottledOctokit>;
  /** GitHub's clock minus ours, in seconds, from the `date` of its last answer. */
  private skewS = 0;
  private readonly clients = new Map<number, GitHubClient>();
  private slug?: Promise<string>;

  constructor(
    readonly config: GitHubAppConfig,
    private readonly opts: {
      baseUrl: string;
      redis: Redis;
      prefix: string;
      log: Logger;
      metrics?: Metrics;
    },
  ) {
    // Rate limits and 5xx waited out as for every other GitHub call (a token minted at a clone, the
    // installations listed at start).
    this.octokit = new ThrottledOctokit({
      baseUrl: opts.baseUrl,
      userAgent: 'thopter-swarm',
      authStrategy: createAppAuth,
      auth: { appId: config.id, createJwt: this.createJwt },
      ...octokitPolicies(opts.log),
    });
    this.octokit.hook.after('request', (response) => this.noteDate(response.headers));
    this.octokit.hook.error('request', (err) => {
      this.noteDate((err as { response?: { headers?: Record<string, unknown> } }).response?.headers);
      throw err;
    });
  }

  /**
   * GitHub's documented JWT: RS256, `iss` the App ID, `iat` 60 s in the past against clock drift, and
   * `exp` within 10 minutes of now. "Now" is GitHub's, as its last answer said: a hub whose clock is
   * off still gets tokens.
   */
  private readonly createJwt = async (appId: string | number, timeDifference?: number) => {
    // @octokit/auth-app passes the drift it read from GitHub's refusal when it tries again.
    if (timeDifference !== undefined) this.skewS = timeDifference;
    const now = Math.floor(Date.now() / 1000) + this.skewS;
    const iat = now - 60;
    const exp = now + 9 * 60;
    const part = (v: object) => Buffer.from(JSON.stringify(v)).toString('base64url');
    const unsigned = `${part({ alg: 'RS256', typ: 'JWT' })}.${part({ iat, exp, iss: String(appId) })}`;
    const signature = createSign('RSA-SHA256').update(unsigned).sign(this.config.privateKey, 'base64url');
    return { jwt: `${unsigned}.${signature}`, expiresAt: new Date((exp - this.skewS) * 1000).toISOString() };
  };

  private noteDate(headers: Record<string, unknown> | undefined) {
    const at = Date.parse(String(headers?.date ?? ''));
    if (Number.isFinite(at)) this.skewS = Math.round((at - Date.now()) / 1000);
  }

  /** `{slug}[bot]`: who the App's comments are by. */
  botLogin(): Promise<string> {
    this.slug ??= this.config.slug
      ? Promise.resolve(this.config.slug)
      : this.octokit.rest.apps.getAuthenticated().then(
          ({ data }) => z.object({ slug: z.string() }).parse(data).slug,
          (err: unknown) => {
            this.slug = undefined;
            throw err;
          },
        );
    return this.slug.then((slug) => `${slug}[bot]`);
  }

  /** The App's installations (accounts it is installed on), every page. */
  async installations(): Promise<Array<{ id: number; account: string; suspended: boolean }>> {
    const data = await this.octokit.paginate(this.octokit.rest.apps.listInstallations, { per_page: 100 });
    return z
      .array(installationSchema)
      .parse(data)
      .map((i) => ({ id: i.id, account: i.account?.login ?? String(i.id), suspended: !!i.suspended_at }));
  }

  /** The client of one installation: intake, replies and pull requests as the App's bot. */
  client(installationId: number): GitHubClient {
    let client = this.clients.get(installationId);
    if (!client) {
      client = new GitHubClient({
        baseUrl: this.opts.baseUrl,
        app: { appId: this.config.id, installationId, createJwt: this.createJwt },
        login: () => this.botLogin(),
        redis: this.opts.redis,
        prefix: this.opts.prefix,
        log: this.opts.log.child({ installation: installationId }),
        metrics: this.opts.metrics,
      });
      this.clients.set(installationId, client);
    }
    return client;
  }

  /** The repositories an installation may reach, as owner/repo, every page. */
  async repositoriesOf(installationId: number): Promise<string[]> {
    const { octokit } = this.client(installationId);
    const data = await octokit.paginate(octokit.rest.apps.listReposAccessibleToInstallation, {
      per_page: 100,
    });
    return z
      .array(z.object({ full_name: z.string() }))
      .parse(data)
      .map((r) => r.full_name);
  }

  /**
   * A token that reaches one repository with {@link THOPTER_TOKEN_PERMISSIONS} and nothing else, for
   * one thopter. GitHub answers 422 when the repository is not in the installation (or the App lacks
   * a permission): that is said in words that tell the operator what to do.
   */
  async mint(installationId: number, repository: string): Promise<MintedToken> {
    const name = repository.split('/')[1]!;
    try {
      const { data } = await this.octokit.rest.apps.createInstallationAccessToken({
        installation_id: installationId,
        repositories: [name],
        permissions: THOPTER_TOKEN_PERMISSIONS,
      });
      const parsed = accessTokenSchema.parse(data);
      // On this hub's clock, which decides when to replace it: GitHub's `expires_at` less the skew
      // its answer's `date` just showed (a hub minutes behind would otherwise renew too late).
      const expiresAt = new Date(Date.parse(parsed.expires_at) - this.skewS * 1000).toISOString();
      return { token: parsed.token, expiresAt };
    } catch (err) {
      // GitHub's refusals stay refusals; a 5xx or a dropped connection is worth the phase's next attempt.
      const status = (err as { status?: number }).status;
      const refused = status !== undefined && status >= 400 && status < 500;
      throw new ThopterError('phase', describeAppError(err, this.config, repository), !refused, {
        cause: err,
      });
    }
  }

  /** Revokes a token minted for a thopter (`DELETE /installation/token`, authenticated with it). */
  async revoke(token: string): Promise<void> {
    const octokit = new ThrottledOctokit({
      baseUrl: this.opts.baseUrl,
      auth: token,
      userAgent: 'thopter-swarm',
      ...octokitPolicies(this.opts.log),
    });
    try {
      await octokit.rest.apps.revokeInstallationAccessToken();
    } catch (err) {
      // Expired or revoked already: nothing left to do.
      if ((err as { status?: number }).status !== 401) throw err;
    }
  }
}

/** What went wrong with the App, and what the operator does about it. */
export function describeAppError(err: unknown, app: GitHubAppConfig, repository?: string): string {
  const e = err as { status?: number; message?: string; request?: { url?: string } };
  const url = e.request?.url ?? '';
  const said = (e.message ?? '').split('\n')[0];
  if (e.status === 401 && /\/app(\/|$)/.test(new URL(url, 'http://x').pathname)) {
    return `GitHub refused the App's JWT (401: ${said}): GITHUB_APP_PRIVATE_KEY is not a current key of the App with GITHUB_APP_ID ${app.id}; generate a private key on the App's settings page and set it (check the ID too)`;
  }
  if (e.status === 404 && /\/app\/installations\/\d+/.test(url)) {
    return `the App's installation is gone (404): install the App again on ${repository ?? 'the repositories it should watch'}`;
  }
  if (e.status === 422 && repository) {
    return `GitHub refused a token for ${repository} (422: ${said}): the repository is not in the App's installation, or the App lacks Contents and Pull requests write permission; add the repository to the installation's repository access (and accept the App's permissions), then launch again`;
  }
  return e.status ? `GitHub answered ${e.status}: ${said}` : (e.message ?? String(err));
}
