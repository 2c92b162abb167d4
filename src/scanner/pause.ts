import type { Redis } from 'ioredis';

export interface IntakeState {
  paused: boolean;
  since?: string;
  by?: string;
}

/**
 * Pausing intake (the seed's dashboard control): a paused hub accepts no new launches, from
 * issues or the API, and says so. Unlike the original, destroys and running thopters carry on.
 * Kept in Redis, so every hub sharing it is paused at once.
 */
export class Intake {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private get key() {
    return `${this.prefix}:intake:paused`;
  }

  async state(): Promise<IntakeState> {
    const raw = await this.redis.get(this.key);
    return raw ? { paused: true, ...(JSON.parse(raw) as { since: string; by: string }) } : { paused: false };
  }

  async pause(by: string): Promise<IntakeState> {
    await this.redis.set(this.key, JSON.stringify({ since: new Date().toISOString(), by }), 'NX');
    return this.state();
  }

  async resume(): Promise<IntakeState> {
    await this.redis.del(this.key);
    return { paused: false };
  }
}
