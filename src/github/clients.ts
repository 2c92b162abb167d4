import type { Redis } from 'ioredis';
import type { Config } from '../config.js';
import type { Metrics } from '../metrics.js';
import type { Logger } from '../log.js';
import { GitHubClient } from './client.js';

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
export class GitHubClients {
  private readonly clients = new Map<string, GitHubClient>();
  private readonly coders = new Map<string, GitHubClient>();

  constructor(
    private readonly config: Config,
    private readonly redis: Redis,
    private readonly log: Logger,
    metrics?: Metrics,
  ) {
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

  /** The watched repositories, as owner/repo. */
  get repositories(): string[] {
    return [...this.clients.keys()];
  }

  for(repository: string): GitHubClient | undefined {
    return this.clients.get(repository);
  }

  /**
   * A client with the repository's agentCoderPAT: the work branch's pull request is the agent's
   * work, so it is opened with the token the agent pushes with, not the hub's issue token.
   */
  coder(repository: string): GitHubClient | undefined {
    return this.coders.get(repository);
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
    for (const repo of this.repositories) {
      const raw = await this.redis.get(this.healthKey(repo));
      out[repo] = raw ? (JSON.parse(raw) as RepositoryHealth) : null;
    }
    return out;
  }
}
