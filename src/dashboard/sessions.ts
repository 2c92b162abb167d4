import { createHash, randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';

/** How long a dashboard sign-in lasts without use. Every authenticated request extends it. */
export const SESSION_TTL_S = 12 * 3600;
export const SESSION_COOKIE = 'thopter_session';

export interface DashboardSession {
  /** Sent back by the dashboard's own pages with every state-changing request. */
  csrf: string;
  createdAt: string;
}

const hash = (id: string) => createHash('sha256').update(id).digest('hex');

/**
 * Dashboard sign-ins, kept in Redis so that every hub behind one address knows them. Redis holds
 * only a hash of each session id: a dump of it cannot be replayed as a cookie.
 */
export class Sessions {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private key = (id: string) => `${this.prefix}:session:${hash(id)}`;

  async create(): Promise<{ id: string; session: DashboardSession }> {
    const id = randomBytes(32).toString('base64url');
    const session = { csrf: randomBytes(24).toString('base64url'), createdAt: new Date().toISOString() };
    await this.redis.set(this.key(id), JSON.stringify(session), 'EX', SESSION_TTL_S);
    return { id, session };
  }

  /** The session behind a cookie value, its expiry pushed back; null when unknown or expired. */
  async get(id: string | undefined): Promise<DashboardSession | null> {
    if (!id || id.length > 100) return null;
    const raw = await this.redis.getex(this.key(id), 'EX', SESSION_TTL_S);
    return raw ? (JSON.parse(raw) as DashboardSession) : null;
  }

  async destroy(id: string | undefined): Promise<void> {
    if (id && id.length <= 100) await this.redis.del(this.key(id));
  }
}
