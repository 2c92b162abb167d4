import type { Redis } from 'ioredis';
import type { Config } from '../config.js';
import type { Metrics } from '../metrics.js';
import type { Logger } from '../log.js';
import { ThopterError } from '../errors.js';
import { describeAppError, GitHubApp, type MintedToken, type ThopterTokens } from './app.js';
import { GitHubClient } from './client.js';

/** Where the App's own health (its key, its installations) is shown beside the repositories'. */
export const APP_HEALTH = 'GitHub App';

export interface RepositoryHealth {
  ok: boolean;
  error?: string;
  at: string;
}

/**
 * One GitHub client per watched repository, each with that repository's issuesPAT (seed: issue
 * access and repository access use separate tokens). A repository whose token fails is reported
 * (log, /ready) and skipped; the others keep working.
 */
export class GitHubClients implements ThopterTokens {
  private readonly clients = new Map<string, GitHubClient>();
  private readonly coders = new Map<string, GitHubClient>();
  /** With GITHUB_APP_ID: the repositories its installations reach, each with its installation. */
  private installed = new Map<string, { installationId: number; client: GitHubClient }>();
  readonly app: GitHubApp | undefined;

  constructor(
    private readonly config: Config,
    private readonly redis: Redis,
    private readonly log: Logger,
    metrics?: Metrics,
  ) {
    if (config.github.app) {
      this.app = new GitHubApp(config.github.app, {
        baseUrl: config.github.apiUrl,
        redis,
        prefix: config.redisPrefix,
        log,
        metrics,
      });
    }
    for (const [repo, settings] of Object.entries(config.repositories)) {
      if (settings.agentCoderPAT) {
        this.coders.set(
          repo,
          new GitHubClient({
            baseUrl: config.github.apiUrl,
            token: settings.agentCoderPAT,
            redis,
            prefix: config.redisPrefix,
            log: log.child({ repository: repo }),
            metrics,
            repository: repo,
          }),
        );
      }
      if (!settings.issuesPAT) {
        // With an App, a repository named for its settings alone is watched through the App.
        if (this.app) continue;
        log.warn(
          { repository: repo },
          'no issuesPAT in GITHUB_INTEGRATION_JSON: this repository is not watched',
        );
        continue;
      }
      this.clients.set(
        repo,
        new GitHubClient({
          baseUrl: config.github.apiUrl,
          token: settings.issuesPAT,
          redis,
          prefix: config.redisPrefix,
          log: log.child({ repository: repo }),
          metrics,
          repository: repo,
        }),
      );
    }
  }

  /** The watched repositories, as owner/repo: PAT repositories, then the App's. */
  get repositories(): string[] {
    return [...new Set([...this.clients.keys(), ...this.installed.keys()])];
  }

  /** The repository's issuesPAT client, else its App installation's. */
  for(repository: string): GitHubClient | undefined {
    return this.clients.get(repository) ?? this.installed.get(repository)?.client;
  }

  /**
   * A client with the repository's agentCoderPAT: the work branch's pull request is the agent's
   * work, so it is opened with the token the agent pushes with, not the hub's issue token.
   */
  coder(repository: string): GitHubClient | undefined {
    return this.coders.get(repository) ?? this.installed.get(repository)?.client;
  }

  async revokeThopterToken(token: string): Promise<void> {
    await this.app?.revoke(token);
  }

  /** Why GitHub access to `repository` failed, said for the token it uses; undefined for a PAT repository. */
  describeAppFailure(repository: string, err: unknown): string | undefined {
    if (!this.app || this.clients.has(repository) || !this.installed.has(repository)) return undefined;
    return describeAppError(err, this.app.config, repository);
  }

  private refreshing?: Promise<void>;
  private refreshAgain = false;

  /**
   * Lists the App's installations and the repositories each reaches (at start, periodically, and on
   * `installation` / `installation_repositories` webhooks). A failure keeps the list it had and is
   * reported (log, /ready) in words that say what to do. One listing at a time: a call during one
   * waits for it and one more (which sees what changed since it began), so an older listing never
   * replaces a newer one.
   */
  refreshInstallations(): Promise<void> {
    if (this.refreshing) {
      this.refreshAgain = true;
      return this.refreshing;
    }
    const run = async () => {
      try {
        do {
          this.refreshAgain = false;
          await this.listInstallations();
        } while (this.refreshAgain);
      } finally {
        this.refreshing = undefined;
      }
    };
    this.refreshing = run();
    return this.refreshing;
  }

  private async listInstallations(): Promise<void> {
    const app = this.app;
    if (!app) return;
    try {
      await app.botLogin();
      const installations = await app.installations();
      if (installations.length === 0) {
        const slug = app.config.slug ?? (await app.botLogin()).replace(/\[bot\]$/, '');
        throw new Error(
          `the App is installed nowhere: install it on the repositories to watch (https://github.com/apps/${slug}/installations/new)`,
        );
      }
      const installed = new Map<string, { installationId: number; client: GitHubClient }>();
      const unread: string[] = [];
      for (const { id, account, suspended } of installations) {
        // A suspended installation (GitHub answers its tokens with 403) or one that cannot be read
        // now must not hide every other installation's repositories.
        if (suspended) {
          unread.push(`${account}: the installation is suspended`);
          continue;
        }
        try {
          for (const repository of await app.repositoriesOf(id)) {
            installed.set(repository, { installationId: id, client: app.client(id) });
          }
        } catch (err) {
          unread.push(`${account}: ${describeAppError(err, app.config)}`);
          // What it reached before stays watched until it can be read again.
          for (const [repository, known] of this.installed)
            if (known.installationId === id) installed.set(repository, known);
        }
      }
      const added = [...installed.keys()].filter((r) => !this.installed.has(r));
      const removed = [...this.installed.keys()].filter((r) => !installed.has(r));
      this.installed = installed;
      if (added.length || removed.length)
        this.log.info({ added, removed, installations: installations.length }, 'GitHub App repositories');
      await this.setHealth(APP_HEALTH, unread.length ? unread.join('; ') : undefined);
    } catch (err) {
      await this.setHealth(APP_HEALTH, describeAppError(err, app.config));
    }
  }

  /** See {@link ThopterTokens.thopterToken}. */
  async thopterToken(repository: string, required: boolean): Promise<MintedToken | undefined> {
    if (this.config.repositories[repository]?.agentCoderPAT || !this.app) return undefined;
    let found = this.installed.get(repository);
    if (!found && required && !this.clients.has(repository)) {
      // This hub's list may be older than the installation (another hub got its webhook): ask again.
      await this.refreshInstallations();
      found = this.installed.get(repository);
    }
    if (!found) {
      // A PAT repository, or a launch by title and body of a repository the App does not reach:
      // cloned as before (a public one needs no token).
      if (!required || this.clients.has(repository)) return undefined;
      throw new ThopterError(
        'phase',
        `the GitHub App is not installed on ${repository}: add the repository to the App's installation (or give it an agentCoderPAT in GITHUB_INTEGRATION_JSON)`,
      );
    }
    try {
      return await this.app.mint(found.installationId, repository);
    } catch (err) {
      await this.setHealth(repository, (err as Error).message);
      throw err;
    }
  }

  private healthKey = (repo: string) => `${this.config.redisPrefix}:github:health:${repo}`;

  async setHealth(repository: string, error?: string): Promise<void> {
    const health: RepositoryHealth = { ok: !error, error, at: new Date().toISOString() };
    const previous = await this.redis.getset(this.healthKey(repository), JSON.stringify(health));
    const wasOk = previous ? (JSON.parse(previous) as RepositoryHealth).ok : true;
    if (error && wasOk)
      this.log.error({ repository, err: error }, 'GitHub access failed for this repository');
    if (!error && !wasOk) this.log.info({ repository }, 'GitHub access works again');
  }

  async health(): Promise<Record<string, RepositoryHealth | null>> {
    const out: Record<string, RepositoryHealth | null> = {};
    if (this.app) {
      const raw = await this.redis.get(this.healthKey(APP_HEALTH));
      out[APP_HEALTH] = raw ? (JSON.parse(raw) as RepositoryHealth) : null;
    }
    for (const repo of this.repositories) {
      const raw = await this.redis.get(this.healthKey(repo));
      out[repo] = raw ? (JSON.parse(raw) as RepositoryHealth) : null;
    }
    return out;
  }
}
