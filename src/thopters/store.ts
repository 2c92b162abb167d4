import { createHash, timingSafeEqual } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { PhaseName } from '../processors/phases/names.js';
import type { StallRecord } from '../status/stall.js';
import type { Turns } from '../status/turns.js';
import { priceOf, type PriceTable } from '../usage/prices.js';
import type { Usage, UsageTotals } from '../usage/tokens.js';
import { usageKeys } from '../usage/totals.js';
import { ThopterError } from '../errors.js';
import {
  FINAL_STATES,
  isFinal,
  type DestroyRequest,
  type FinishState,
  type BranchCompare,
  type MachineRecord,
  type PhaseRecord,
  type PullRequestRecord,
  type Request,
  type SaveOutcome,
  type SessionStatus,
  type ThopterEvent,
  type ThopterRecord,
  type ThopterState,
  type ToldMessage,
} from './record.js';

const MAX_EVENTS = 200;
/** How long a day's usage aggregate is kept (months and all-time are kept for good). */
const USAGE_DAYS_KEPT = 400;

/**
 * Writes fields unless the thopter has reached a final state (a late status post or phase
 * result must not bring a destroyed thopter back), and tells listeners the record changed.
 * KEYS: record hash, change channel. ARGV: guard ('1'|'0'), id, field, value, ...
 */
const UPDATE = `
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if ARGV[1] == '1' then
  local s = redis.call('HGET', KEYS[1], 'state')
  if s == 'destroyed' or s == 'failed' then return 0 end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('PUBLISH', KEYS[2], ARGV[2])
return 1`;

/** KEYS: record hash, change channel. ARGV: id, machine JSON. Returns the machine that stands, or nil. */
const CLAIM = `
if redis.call('EXISTS', KEYS[1]) == 0 then return nil end
local s = redis.call('HGET', KEYS[1], 'state')
if s == 'destroyed' or s == 'failed' then return nil end
local current = redis.call('HGET', KEYS[1], 'machine')
if current then return current end
redis.call('HSET', KEYS[1], 'machine', ARGV[2])
redis.call('PUBLISH', KEYS[2], ARGV[1])
return ARGV[2]`;

/**
 * KEYS: record hash, index zset, change channel, and for a continuation its work branch's claim.
 * ARGV: id, score, record key prefix, field, value, ... Returns 1 (created), 0 (it exists), or the
 * id of the live thopter that holds the branch's claim: two continues of one branch at once (two
 * comments, two hubs) start one agent on it, not two that fight.
 */
const CREATE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if KEYS[4] then
  local holder = redis.call('GET', KEYS[4])
  if holder and holder ~= ARGV[1] then
    local state = redis.call('HGET', ARGV[3] .. holder, 'state')
    if state and state ~= '${FINAL_STATES.join("' and state ~= '")}' then return holder end
  end
  redis.call('SET', KEYS[4], ARGV[1])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('PUBLISH', KEYS[3], ARGV[1])
return 1`;

/**
 * KEYS: record hash, its events, its kept transcripts, index zset, change channel, then the keys
 * that may name it (its pull request's index entry, its work branch's claim). ARGV: id.
 * Deletes an ended thopter (a final state never changes back), and those keys while they still
 * name it (a later thopter may have taken them over); returns 1 if it did.
 */
const PRUNE = `
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= '${FINAL_STATES.join("' and state ~= '")}' then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[1])
for i = 6, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then redis.call('DEL', KEYS[i]) end
end
redis.call('PUBLISH', KEYS[5], ARGV[1])
return 1`;

/**
 * A Lua function recording a thopter's usage: the reader's cumulative totals per model, merged by
 * taking for each model and kind the larger of the recorded and the new count, so a total read
 * again (a re-read after a hub restart, a post repeated) changes nothing. What grew is added, in
 * the same script, to the day's, the month's and the all-time aggregates (hash field
 * `repository\tperson\tmodel\tkind`; kind `cost` in USD, `unpriced` for tokens of a model with no
 * price), so those count each token once. Arguments: record hash, day, month and all-time hashes,
 * totals JSON, prices JSON (USD per million, for the totals' models that have one), updatedAt, the
 * day hash's lifetime in s. Returns whether anything grew.
 */
const USAGE_FUNCTION = `
local function record_usage(record, day, month, all, totals_json, prices_json, updated_at, day_ttl)
  local h = redis.call('HMGET', record, 'request', 'usage')
  local request = cjson.decode(h[1])
  local usage = h[2] and cjson.decode(h[2]) or {byModel = {}}
  local totals = cjson.decode(totals_json)
  local prices = cjson.decode(prices_json)
  local kinds = {'input', 'output', 'cacheRead', 'cacheCreation'}
  local aggregates = {day, month, all}
  local who = request.repository .. '\t' .. request.requestedBy .. '\t'
  local changed = false
  for model, t in pairs(totals) do
    local m = usage.byModel[model] or {tokens = {input = 0, output = 0, cacheRead = 0, cacheCreation = 0}, messages = 0}
    local price = prices[model]
    local cost = 0
    for _, kind in ipairs(kinds) do
      local grew = (tonumber(t[kind]) or 0) - (m.tokens[kind] or 0)
      if grew > 0 then
        changed = true
        m.tokens[kind] = m.tokens[kind] + grew
        for _, key in ipairs(aggregates) do
          redis.call('HINCRBY', key, who .. model .. '\t' .. kind, grew)
          if not price then redis.call('HINCRBY', key, who .. model .. '\tunpriced', grew) end
        end
        if price then cost = cost + grew * price[kind] / 1000000 end
      end
    end
    if (tonumber(t.messages) or 0) > m.messages then
      changed = true
      m.messages = tonumber(t.messages)
    end
    if cost > 0 then
      for _, key in ipairs(aggregates) do
        redis.call('HINCRBYFLOAT', key, who .. model .. '\tcost', string.format('%.12f', cost))
      end
    end
    if price then
      local c = 0
      for _, kind in ipairs(kinds) do c = c + m.tokens[kind] * price[kind] / 1000000 end
      m.costUsd = c
    else
      m.costUsd = cjson.null
    end
    usage.byModel[model] = m
  end
  if not changed then return false end
  local sum = {input = 0, output = 0, cacheRead = 0, cacheCreation = 0}
  local messages, cost = 0, 0
  for _, m in pairs(usage.byModel) do
    for _, kind in ipairs(kinds) do sum[kind] = sum[kind] + m.tokens[kind] end
    messages = messages + m.messages
    if cost ~= cjson.null then
      if type(m.costUsd) == 'number' then cost = cost + m.costUsd else cost = cjson.null end
    end
  end
  usage.tokens, usage.messages, usage.costUsd, usage.updatedAt = sum, messages, cost, updated_at
  redis.call('HSET', record, 'usage', cjson.encode(usage))
  redis.call('EXPIRE', day, tonumber(day_ttl))
  return true
end
`;

/**
 * Records a told message once per key, unless the thopter has ended.
 * KEYS: record hash, change channel. ARGV: id, field, message JSON, updatedAt.
 * Returns 1 recorded, 2 recorded before, 0 ended, -1 unknown.
 */
const ADD_TOLD = `
local s = redis.call('HGET', KEYS[1], 'state')
if not s then return -1 end
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then return 2 end
if s == 'destroyed' or s == 'failed' then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3], 'updatedAt', ARGV[4])
redis.call('PUBLISH', KEYS[2], ARGV[1])
return 1`;

/**
 * Replaces a told message only if it is still exactly as the caller read it: of two hubs that
 * move the same message on, one wins. KEYS: record hash, change channel. ARGV: id, field, the
 * JSON read, the new JSON, updatedAt. Returns 1 replaced, 0 changed meanwhile.
 */
const MOVE_TOLD = `
if redis.call('HGET', KEYS[1], ARGV[2]) ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[4], 'updatedAt', ARGV[5])
redis.call('PUBLISH', KEYS[2], ARGV[1])
return 1`;

const toldField = (key: string) => `told:${key}`;

/**
 * Records a thopter's usage (USAGE_FUNCTION) and tells the record's listeners when it grew.
 * KEYS: record hash, change channel, day, month and all-time hashes. ARGV: id, totals JSON, prices
 * JSON, updatedAt, day hash lifetime in s. Returns 1 changed, 0 unchanged, -1 unknown.
 */
const WRITE_USAGE =
  USAGE_FUNCTION +
  `
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if not record_usage(KEYS[1], KEYS[3], KEYS[4], KEYS[5], ARGV[2], ARGV[3], ARGV[4], ARGV[5]) then return 0 end
redis.call('PUBLISH', KEYS[2], ARGV[1])
return 1`;

/**
 * Writes a session status unless the thopter has ended, and tells listeners only when what they
 * show of it changed (state, agent, last activity, idle since): an unchanged status re-posted every
 * few seconds by a quiet thopter wakes neither its lifecycle job nor the dashboards. With a token
 * hash (an observer's post) it first checks that hash is one of the thopter's, so a post costs one
 * round trip. A plain comparison is fine here: it compares sha256 digests, and learning how much of
 * a digest matched tells nothing about a token.
 * A turn count above the recorded one (the agent's Stop hook ran) records the turns and one event
 * `turn-ended`, and tells the record's listeners (lifecycle jobs act on ended turns). The usage read
 * with the status is recorded in the same script (USAGE_FUNCTION), so a listener woken by an ended
 * turn already finds that turn's usage.
 * KEYS: record hash, session channel, events list, record change channel, usage day, month and
 * all-time hashes. ARGV: id, session JSON, its summary, updatedAt, token hash or '', turns ended or
 * '', when the last ended, events kept, usage totals JSON or '', prices JSON, day hash lifetime in s.
 * Returns 1 written, 0 ended, -1 unknown, -2 the token hash is not the thopter's.
 */
const WRITE_SESSION =
  USAGE_FUNCTION +
  `
local told = false
local h = redis.call('HMGET', KEYS[1], 'state', 'sessionSummary', 'tokenHash')
if ARGV[5] ~= '' then
  local known = false
  for hash in string.gmatch(h[3] or '', '[^,]+') do
    if hash == ARGV[5] then known = true end
  end
  if not known then return -2 end
end
if not h[1] then return -1 end
if h[1] == 'destroyed' or h[1] == 'failed' then return 0 end
redis.call('HSET', KEYS[1], 'session', ARGV[2], 'sessionSummary', ARGV[3], 'updatedAt', ARGV[4])
if h[2] ~= ARGV[3] then redis.call('PUBLISH', KEYS[2], ARGV[1]) end
local seen = tonumber(ARGV[6])
if seen then
  local before = cjson.decode(redis.call('HGET', KEYS[1], 'turns') or '{"count":0}')
  if seen > before.count then
    redis.call('HSET', KEYS[1], 'turns', cjson.encode({count = seen, lastEndedAt = ARGV[7]}))
    local message = 'the agent ended its turn ' .. seen .. ' and waits for input'
    if seen > before.count + 1 then
      message = 'the agent ended its turns ' .. (before.count + 1) .. ' to ' .. seen .. ' and waits for input'
    end
    redis.call('RPUSH', KEYS[3], cjson.encode({at = ARGV[7], type = 'turn-ended', message = message}))
    redis.call('LTRIM', KEYS[3], -tonumber(ARGV[8]), -1)
    redis.call('PUBLISH', KEYS[4], ARGV[1])
    told = true
  end
end
if ARGV[9] ~= '' and record_usage(KEYS[1], KEYS[5], KEYS[6], KEYS[7], ARGV[9], ARGV[10], ARGV[4], ARGV[11]) and not told then
  redis.call('PUBLISH', KEYS[4], ARGV[1])
end
return 1`;

export const hashToken = (token: string) => createHash('sha256').update(token).digest('hex');

/**
 * Thopter records in Redis, under `{prefix}:record:` (BullMQ owns `{prefix}:{queue}:`): one hash per thopter, one field per writer (the lifecycle job, each
 * phase, the observer), so concurrent writers never overwrite each other's news.
 */
export class ThopterStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
  ) {}

  private key = (id: string) => `${this.prefix}:record:${id}`;
  private eventsKey = (id: string) => `${this.prefix}:record:${id}:events`;
  private get indexKey() {
    return `${this.prefix}:records:index`;
  }
  /** Published with the thopter id whenever its record changes, except its session status. */
  get changeChannel() {
    return `${this.prefix}:records:changed`;
  }
  /**
   * Published with the thopter id when what its session status shows changed. Apart from the
   * record channel: 1000 thopters post every 3 s, and only the dashboards care; lifecycle jobs
   * (which wait on record changes) read the session on their own schedule.
   */
  get sessionChannel() {
    return `${this.prefix}:sessions:changed`;
  }

  /**
   * Creates the record unless one exists. Returns whether it was created, and the record. A
   * continuation whose work branch another live thopter carries on already is refused with a
   * `conflict` error naming that thopter.
   */
  async create(request: Request, tokenHash?: string): Promise<{ created: boolean; record: ThopterRecord }> {
    const now = new Date().toISOString();
    const fields: Record<string, string> = {
      id: request.id,
      state: 'queued',
      request: JSON.stringify(request),
      createdAt: request.createdAt,
      updatedAt: now,
    };
    if (tokenHash) fields.tokenHash = tokenHash;
    const branch = request.continues?.workBranch;
    const keys = [this.key(request.id), this.indexKey, this.changeChannel];
    if (branch) keys.push(this.branchClaimKey(request.repository, branch));
    const created = await this.redis.eval(
      CREATE,
      keys.length,
      ...keys,
      request.id,
      Date.parse(request.createdAt),
      this.key(''),
      ...Object.entries(fields).flat(),
    );
    if (typeof created === 'string') {
      throw new ThopterError(
        'conflict',
        `continues: thopter ${created} carries on ${branch} already, and a second agent on that branch would fight it: tell it what you need (\`/thopter tell\`), or end it first`,
      );
    }
    const record = await this.get(request.id);
    if (!record) throw new Error(`thopter ${request.id} vanished right after it was created`);
    return { created: created === 1, record };
  }

  /**
   * Deletes the thopters that ended before `endedBefore` (epoch ms): record, events and kept
   * transcripts (transcripts/archive.ts keeps them under the record's key), and its pull request's
   * index entry and branch claim unless a later thopter holds them. Live ones stay, however old.
   * Idempotent, so any number of hubs may run it at once. Returns the ids deleted.
   */
  async pruneEnded(endedBefore: number): Promise<string[]> {
    // The index is by creation, and a thopter ends after it was created.
    const candidates = await this.redis.zrangebyscore(this.indexKey, '-inf', endedBefore);
    const pruned: string[] = [];
    for (let i = 0; i < candidates.length; i += 100) {
      for (const r of await this.getMany(candidates.slice(i, i + 100))) {
        const ended = Date.parse(r.endedAt ?? r.updatedAt);
        if (!isFinal(r.state) || !(ended < endedBefore)) continue;
        const key = this.key(r.id);
        const keys = [key, this.eventsKey(r.id), `${key}:transcripts`, this.indexKey, this.changeChannel];
        if (r.pullRequest) keys.push(this.pullRequestKey(r.request.repository, r.pullRequest.number));
        const branch = r.request.continues?.workBranch;
        if (branch) keys.push(this.branchClaimKey(r.request.repository, branch));
        const done = await this.redis.eval(PRUNE, keys.length, ...keys, r.id);
        if (done === 1) pruned.push(r.id);
      }
    }
    return pruned;
  }

  async get(id: string): Promise<ThopterRecord | null> {
    const h = await this.redis.hgetall(this.key(id));
    return h.id ? parseRecord(h) : null;
  }

  /** The records of `ids` that exist, in one round trip. */
  async getMany(ids: string[]): Promise<ThopterRecord[]> {
    if (ids.length === 0) return [];
    const pipeline = this.redis.pipeline();
    for (const id of ids) pipeline.hgetall(this.key(id));
    const rows = (await pipeline.exec()) ?? [];
    return rows
      .map(([, h]) => h as Record<string, string>)
      .filter((h) => h && h.id)
      .map(parseRecord);
  }

  async state(id: string): Promise<ThopterState | null> {
    return (await this.redis.hget(this.key(id), 'state')) as ThopterState | null;
  }

  async destroyRequested(id: string): Promise<boolean> {
    return (await this.redis.hexists(this.key(id), 'destroyRequested')) === 1;
  }

  /**
   * What a supervising lifecycle job looks at on every wake, in one round trip: a destroy request,
   * and whether a turn ended that the finish line has not acted on yet.
   */
  async supervisionNews(id: string): Promise<{ destroyRequested: boolean; turnEnded: boolean }> {
    const [destroy, turns, finish] = await this.redis.hmget(
      this.key(id),
      'destroyRequested',
      'turns',
      'finish',
    );
    const ended = turns ? (JSON.parse(turns) as Turns).count : 0;
    const reported = finish ? (JSON.parse(finish) as FinishState).reported : 0;
    return { destroyRequested: destroy !== null, turnEnded: ended > reported };
  }

  /** Newest first. */
  async list(opts: { limit?: number; states?: ThopterState[] } = {}): Promise<ThopterRecord[]> {
    const ids = await this.redis.zrevrange(this.indexKey, 0, (opts.limit ?? 1000) - 1);
    const pipeline = this.redis.pipeline();
    for (const id of ids) pipeline.hgetall(this.key(id));
    const rows = (await pipeline.exec()) ?? [];
    const records = rows
      .map(([, h]) => h as Record<string, string>)
      .filter((h) => h && h.id)
      .map(parseRecord);
    return opts.states ? records.filter((r) => opts.states!.includes(r.state)) : records;
  }

  async tokenMatches(id: string, token: string): Promise<boolean> {
    const stored = await this.redis.hget(this.key(id), 'tokenHash');
    if (!stored) return false;
    const given = Buffer.from(hashToken(token), 'hex');
    let match = false;
    for (const hash of stored.split(',')) {
      const want = Buffer.from(hash, 'hex');
      if (given.length === want.length && timingSafeEqual(given, want)) match = true;
    }
    return match;
  }

  /** Writes fields on a thopter that has not ended. Returns false when it has ended (or is unknown). */
  private async update(id: string, fields: Record<string, string>, guard = true): Promise<boolean> {
    fields.updatedAt = new Date().toISOString();
    const r = await this.redis.eval(
      UPDATE,
      2,
      this.key(id),
      this.changeChannel,
      guard ? '1' : '0',
      id,
      ...Object.entries(fields).flat(),
    );
    return r === 1;
  }

  /**
   * Adds the hash of a token delivered to the thopter's machine. Each create attempt makes a new
   * token, and a resumed attempt may find the machine an earlier one made with its own: every
   * token an attempt handed out stays valid (the last 8; only hashes are kept).
   */
  async addTokenHash(id: string, tokenHash: string) {
    const stored = (await this.redis.hget(this.key(id), 'tokenHash')) ?? '';
    const hashes = [tokenHash, ...stored.split(',').filter((h) => h && h !== tokenHash)].slice(0, 8);
    return this.update(id, { tokenHash: hashes.join(',') });
  }

  setState(
    id: string,
    state: Exclude<ThopterState, 'destroyed' | 'failed'>,
    stamp?: 'startedAt' | 'runningAt',
  ) {
    const fields: Record<string, string> = { state };
    if (stamp) fields[stamp] = new Date().toISOString();
    return this.update(id, fields);
  }

  /** A failed thopter whose machine stays for a look until `until` (THOPTER_KEEP_FAILED). */
  /** The finish line's progress; written only by the thopter's lifecycle job, while it runs. */
  setFinish(id: string, finish: FinishState) {
    return this.update(id, { finish: JSON.stringify(finish) });
  }

  /** Recorded even after the thopter ended: its last report is posted then. */
  setLastReport(id: string, report: { key: string; url: string; at: string }) {
    return this.update(id, { lastReport: JSON.stringify(report) }, false);
  }

  /** Stalls reported; written only by the thopter's lifecycle job, while it runs. */
  setStall(id: string, stall: StallRecord) {
    return this.update(id, { stall: JSON.stringify(stall) });
  }

  keep(id: string, reason: string, until: string) {
    return this.update(id, { state: 'kept', kept: JSON.stringify({ reason, until }) });
  }

  /**
   * Records `machine` unless one is recorded already, and returns the one that stands. Two runs of
   * create-machine (a stalled job and its resumption) thus agree on one machine id.
   */
  async claimMachine(id: string, machine: MachineRecord): Promise<MachineRecord | null> {
    const claimed = await this.redis.eval(
      CLAIM,
      2,
      this.key(id),
      this.changeChannel,
      id,
      JSON.stringify(machine),
    );
    return typeof claimed === 'string' ? (JSON.parse(claimed) as MachineRecord) : null;
  }

  setMachine(id: string, machine: MachineRecord) {
    return this.update(id, { machine: JSON.stringify(machine) });
  }

  setPhase(id: string, phase: PhaseName, record: PhaseRecord) {
    return this.update(id, { [`phase:${phase}`]: JSON.stringify(record) });
  }

  /** Recorded even after the thopter ended: the comment still shows its last state. */
  setCommentId(id: string, commentId: number, commentHash?: string) {
    return this.update(id, { commentId: String(commentId), ...(commentHash ? { commentHash } : {}) }, false);
  }

  /** Recorded even after the thopter ended: its work branch outlives its machine. */
  async setPullRequest(id: string, pullRequest: PullRequestRecord) {
    const written = await this.update(id, { pullRequest: JSON.stringify(pullRequest) }, false);
    // Indexed by repository and number, so a review or command on the pull request finds its
    // thopter without asking GitHub for the pull request's head branch.
    const request = await this.redis.hget(this.key(id), 'request');
    if (written && request) {
      const { repository } = JSON.parse(request) as Request;
      await this.redis.set(this.pullRequestKey(repository, pullRequest.number), id);
    }
    return written;
  }

  /** The thopter whose pull request this is, as the pull-request job recorded it (the latest one). */
  pullRequestThopter(repository: string, number: number): Promise<string | null> {
    return this.redis.get(this.pullRequestKey(repository, number));
  }

  private pullRequestKey = (repository: string, number: number) =>
    `${this.prefix}:pull-request:${repository}#${number}`;

  /** Which live thopter carries on a work branch (see CREATE). */
  private branchClaimKey = (repository: string, branch: string) =>
    `${this.prefix}:branch-claim:${repository}\t${branch}`;

  /** Recorded even after the thopter ended, like the pull request. */
  setCompare(id: string, compare: BranchCompare) {
    return this.update(id, { compare: JSON.stringify(compare) }, false);
  }

  /** When the GitHub App token on the thopter's machine expires (never the token). */
  setGitToken(id: string, gitToken: NonNullable<ThopterRecord['gitToken']>) {
    return this.update(id, { gitToken: JSON.stringify(gitToken) });
  }

  /**
   * Records a session status. With `token` (an observer's post) only if it is one of the thopter's
   * status tokens, checked in the same round trip. `ended`: the thopter has ended (or is unknown),
   * so the status is not recorded; `unauthorized`: the token is not the thopter's, or there is no
   * such thopter (one answer for both). `usage`: the transcripts' totals read with the status.
   */
  async setSession(
    id: string,
    session: SessionStatus,
    opts: { token?: string; usage?: { totals: UsageTotals; prices: PriceTable } } = {},
  ): Promise<'recorded' | 'ended' | 'unauthorized'> {
    const summary = JSON.stringify([
      session.state,
      session.agentRunning,
      session.lastActivity,
      session.idleSince ?? '',
    ]);
    // A turn that ended is recorded in the same round trip, once, whichever hub or post saw it first.
    const keys = usageKeys(this.prefix, new Date());
    const r = await this.redis.eval(
      WRITE_SESSION,
      7,
      this.key(id),
      this.sessionChannel,
      this.eventsKey(id),
      this.changeChannel,
      keys.day,
      keys.month,
      keys.all,
      id,
      JSON.stringify(session),
      summary,
      new Date().toISOString(),
      opts.token === undefined ? '' : hashToken(opts.token),
      session.turns ? String(session.turns.count) : '',
      session.turns?.lastEndedAt ?? new Date().toISOString(),
      String(MAX_EVENTS),
      opts.usage ? JSON.stringify(opts.usage.totals) : '',
      opts.usage ? JSON.stringify(pricesFor(opts.usage.totals, opts.usage.prices)) : '{}',
      String(USAGE_DAYS_KEPT * 86_400),
    );
    return r === 1 ? 'recorded' : r === -2 ? 'unauthorized' : 'ended';
  }

  /**
   * Records the usage read from the thopter's transcripts (cumulative totals per model), and adds
   * what grew to the day, month and all-time aggregates in the same script: a total written again
   * (by another hub, after a restart) changes nothing. Recorded even after the thopter ended: the
   * last read may come with its teardown. Returns whether anything grew.
   */
  async setUsage(id: string, totals: UsageTotals, prices: PriceTable, now = new Date()): Promise<boolean> {
    const keys = usageKeys(this.prefix, now);
    const r = await this.redis.eval(
      WRITE_USAGE,
      5,
      this.key(id),
      this.changeChannel,
      keys.day,
      keys.month,
      keys.all,
      id,
      // An empty Lua table encodes as {} either way; a JSON object keeps models as keys.
      JSON.stringify(totals),
      JSON.stringify(pricesFor(totals, prices)),
      now.toISOString(),
      String(USAGE_DAYS_KEPT * 86_400),
    );
    return r === 1;
  }

  /**
   * The first request wins (its reason, and whether to save); later requests for the same thopter
   * change nothing. `save: false` skips the save before the teardown.
   */
  async requestDestroy(id: string, reason: string, opts: { save?: boolean } = {}): Promise<boolean> {
    const request: DestroyRequest = { reason, at: new Date().toISOString() };
    if (opts.save === false) request.save = false;
    const set = await this.redis.hsetnx(this.key(id), 'destroyRequested', JSON.stringify(request));
    if (set === 1) await this.redis.publish(this.changeChannel, id);
    return set === 1;
  }

  /** Records what the save before the teardown did. */
  setSaved(id: string, outcome: SaveOutcome) {
    return this.update(id, { saved: JSON.stringify(outcome) });
  }

  /** Moves the thopter to a final state. Only the first call counts. */
  finish(id: string, state: 'destroyed' | 'failed', reason: string) {
    return this.update(id, { state, endReason: reason, endedAt: new Date().toISOString() });
  }

  /**
   * Records a message for the thopter's agent, once per `message.key`, unless it has ended.
   * `exists`: that key was recorded before (then nothing changes).
   */
  async addTold(id: string, message: ToldMessage): Promise<'recorded' | 'exists' | 'ended' | 'unknown'> {
    const r = await this.redis.eval(
      ADD_TOLD,
      2,
      this.key(id),
      this.changeChannel,
      id,
      toldField(message.key),
      JSON.stringify(message),
      new Date().toISOString(),
    );
    return r === 1 ? 'recorded' : r === 2 ? 'exists' : r === 0 ? 'ended' : 'unknown';
  }

  async told(id: string, key: string): Promise<ToldMessage | null> {
    const raw = await this.redis.hget(this.key(id), toldField(key));
    return raw ? (JSON.parse(raw) as ToldMessage) : null;
  }

  /**
   * Moves a told message on (`queued` → `delivering` → `delivered`), only if it is still `from`
   * as read: returns the message written, or null when another hub moved it first. Written even
   * after the thopter ended: why a message was not delivered is kept.
   */
  async moveTold(id: string, from: ToldMessage, to: Partial<ToldMessage>): Promise<ToldMessage | null> {
    const next: ToldMessage = { ...from, ...to, key: from.key };
    const r = await this.redis.eval(
      MOVE_TOLD,
      2,
      this.key(id),
      this.changeChannel,
      id,
      toldField(from.key),
      JSON.stringify(from),
      JSON.stringify(next),
      new Date().toISOString(),
    );
    return r === 1 ? next : null;
  }

  async addEvent(id: string, type: string, message: string): Promise<void> {
    const event: ThopterEvent = { at: new Date().toISOString(), type, message };
    await this.redis
      .multi()
      .rpush(this.eventsKey(id), JSON.stringify(event))
      .ltrim(this.eventsKey(id), -MAX_EVENTS, -1)
      .publish(this.changeChannel, id)
      .exec();
  }

  async events(id: string): Promise<ThopterEvent[]> {
    return (await this.redis.lrange(this.eventsKey(id), 0, -1)).map((e) => JSON.parse(e) as ThopterEvent);
  }
}

/** The prices of the models in `totals` that have one: what the usage script needs of the table. */
function pricesFor(totals: UsageTotals, prices: PriceTable): PriceTable {
  const priced: PriceTable = {};
  for (const model of Object.keys(totals)) {
    const price = priceOf(prices, model);
    if (price) priced[model] = price;
  }
  return priced;
}

function parseRecord(h: Record<string, string>): ThopterRecord {
  const phases: ThopterRecord['phases'] = {};
  const told: ToldMessage[] = [];
  for (const [k, v] of Object.entries(h)) {
    if (k.startsWith('phase:')) phases[k.slice('phase:'.length) as PhaseName] = JSON.parse(v) as PhaseRecord;
    if (k.startsWith('told:')) told.push(JSON.parse(v) as ToldMessage);
  }
  told.sort((a, b) => a.at.localeCompare(b.at));
  const json = <T>(v: string | undefined): T | undefined =>
    v === undefined ? undefined : (JSON.parse(v) as T);
  const state = h.state as ThopterState;
  return {
    id: h.id!,
    state,
    request: JSON.parse(h.request!) as Request,
    machine: json<MachineRecord>(h.machine),
    phases,
    session: json<SessionStatus>(h.session),
    destroyRequested: json<DestroyRequest>(h.destroyRequested),
    saved: json<SaveOutcome>(h.saved),
    kept: json<{ reason: string; until: string }>(h.kept),
    turns: json<Turns>(h.turns),
    finish: json<FinishState>(h.finish),
    usage: json<Usage>(h.usage),
    lastReport: json<{ key: string; url: string; at: string }>(h.lastReport),
    pullRequest: json<PullRequestRecord>(h.pullRequest),
    compare: json<BranchCompare>(h.compare),
    stall: json<StallRecord>(h.stall),
    ...(told.length ? { told } : {}),
    gitToken: json<NonNullable<ThopterRecord['gitToken']>>(h.gitToken),
    endReason: h.endReason,
    commentId: h.commentId ? Number(h.commentId) : undefined,
    commentHash: h.commentHash,
    createdAt: h.createdAt!,
    startedAt: h.startedAt,
    runningAt: h.runningAt,
    endedAt: h.endedAt,
    updatedAt: h.updatedAt ?? h.createdAt!,
  };
}
