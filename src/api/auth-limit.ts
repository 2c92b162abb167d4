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
 * An address over its budget is refused whatever it sent, so a right guess is refused like a
 * wrong one and a refusal tells nothing. Once the total is spent (guesses spread
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

  /**
   * Records one token attempt from `address` whose token was `right` or not, and says whether to
   * answer it: 0, or the seconds until the address may try again. Deciding and counting are one
   * Redis script, so many guesses in flight at once cannot all slip under the limit.
   */
  async attempt(address: string, right: boolean): Promise<number> {
    const ms = await this.redis.eval(
      ATTEMPT,
      2,
      this.addressKey(address),
      this.totalKey,
      this.limit.perAddress,
      this.limit.total,
      AUTH_WINDOW_S,
      right ? 1 : 0,
    );
    return Number(ms) > 0 ? Math.ceil(Number(ms) / 1000) : 0;
  }
}

/** Returns 0 (answer it) or the milliseconds the address is held for. The window starts at its first failure. */
const ATTEMPT = `
local mine = tonumber(redis.call('GET', KEYS[1]) or '0')
local all = tonumber(redis.call('GET', KEYS[2]) or '0')
local held = nil
if mine >= tonumber(ARGV[1]) then held = KEYS[1]
elseif mine > 0 and all >= tonumber(ARGV[2]) then held = KEYS[2] end
if held then return math.max(1, redis.call('PTTL', held)) end
if ARGV[4] == '0' then
  for _, key in ipairs(KEYS) do
    redis.call('SET', key, 0, 'EX', ARGV[3], 'NX')
    redis.call('INCR', key)
  end
end
return 0
`;

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
