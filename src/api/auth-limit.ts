import type { Redis } from 'ioredis';

/** The window wrong tokens are counted over. */
export const AUTH_WINDOW_S = 60;

export interface AuthFailureLimit {
  /** Wrong tokens a client address may send per window. */
  perAddress: number;
  /** Wrong tokens all addresses together may send per window before any address that erred is held. */
  total: number;
}

/**
 * Counts wrong HUB_API_TOKENs (bearer, Basic, the sign-in form) per client address and overall, in
 * Redis, so that n hubs behind one address share one budget as they share sign-ins: a guesser
 * cannot multiply its rate by the number of hubs.
 *
 * An address over its budget is refused before its token is even compared, so a right guess is
 * refused like a wrong one and a refusal tells nothing. Once the total is spent (guesses spread
 * over many addresses), every address that erred in this window is refused too, while one that did
 * not keeps working: a script with the right token is never locked out by someone else's guesses,
 * and a fresh address gets one guess per window at most.
 */
export class AuthLimiter {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    private readonly limit: AuthFailureLimit,
  ) {}

  private addressKey = (address: string) => `${this.prefix}:auth-failures:${clientOf(address)}`;
  private get totalKey() {
    return `${this.prefix}:auth-failures`;
  }

  /** Seconds until `address` may try a token again; 0 when it may now. */
  async retryAfter(address: string): Promise<number> {
    const rows =
      (await this.redis
        .pipeline()
        .get(this.addressKey(address))
        .pttl(this.addressKey(address))
        .get(this.totalKey)
        .pttl(this.totalKey)
        .exec()) ?? [];
    const value = (i: number) => Number(rows[i]?.[1] ?? 0);
    const seconds = (ttlMs: number) => Math.max(1, Math.ceil(ttlMs / 1000));
    const failures = value(0);
    if (failures >= this.limit.perAddress) return seconds(value(1));
    if (failures > 0 && value(2) >= this.limit.total) return seconds(value(3));
    return 0;
  }

  /** Records a wrong token from `address`. */
  async failed(address: string): Promise<void> {
    // The window starts at the first failure: SET NX gives the key its expiry, INCR keeps it.
    await this.redis
      .multi()
      .set(this.addressKey(address), 0, 'EX', AUTH_WINDOW_S, 'NX')
      .incr(this.addressKey(address))
      .set(this.totalKey, 0, 'EX', AUTH_WINDOW_S, 'NX')
      .incr(this.totalKey)
      .exec();
  }
}

/**
 * Whom a budget belongs to: an IPv4 address (also when an IPv6 socket shows it as ::ffff:a.b.c.d),
 * or an IPv6 /64, the block one host is given: counting single IPv6 addresses would give a guesser
 * 2^64 budgets.
 */
export function clientOf(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!address.includes(':')) return address;
  const [head = '', tail] = address.toLowerCase().split('%')[0]!.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups =
    tail === undefined
      ? left
      : [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right];
  return `${groups
    .slice(0, 4)
    .map((g) => g.replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}
