import type { ThopterTokens } from '../github/app.js';
import type { Metrics } from '../metrics.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { Prompts } from '../prompts.js';
import type { Provider, Transport } from '../providers/types.js';
import type { HubQueues } from '../queues/index.js';
import type { RecordChanges } from '../thopters/changes.js';
import type { ThopterStore } from '../thopters/store.js';
import type { TranscriptArchive } from '../transcripts/archive.js';

/** What every processor works with; built once by the composition root. */
export interface ProcessorDeps {
  config: Config;
  log: Logger;
  store: ThopterStore;
  changes: RecordChanges;
  queues: HubQueues;
  provider: Provider;
  prompts: Prompts;
  transports: TransportPool;
  /** Where the agent's transcripts are kept when its machine goes. */
  transcripts: TranscriptArchive;
  /** Tells the thopter's issue (if it came from one) that its state changed; cheap, deduplicated. */
  announce(thopterId: string): Promise<void>;
  /**
   * Has the hub open (or adopt) the work branch's pull request once the branch has commits the
   * default branch lacks, and record the branch's figures; does nothing for a repository not on
   * GitHub. Cheap and safe to call on every turn end, agent exit and teardown.
   */
  queuePullRequest(thopterId: string): Promise<void>;
  metrics?: Metrics;
  /** GitHub App tokens for thopters' clones and pushes (with GITHUB_APP_ID). */
  thopterTokens?: ThopterTokens;
}

/** A transport unused this long is closed; the next phase on this hub opens a new one. */
const IDLE_CLOSE_MS = 60_000;

/**
 * One transport per machine, shared by the phases of its provision that run on this hub (on Fly,
 * one SSH connection instead of one per phase). Phases run on any hub and each hub keeps its own,
 * so entries close themselves once idle, and at once when the machine is torn down here.
 */
export class TransportPool {
  private readonly open = new Map<string, Entry>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly provider: Provider) {
    this.sweeper = setInterval(() => this.closeIdle(), IDLE_CLOSE_MS / 2);
    this.sweeper.unref();
  }

  async get(machineId: string): Promise<Transport> {
    let entry = this.open.get(machineId);
    // A connection that broke (the machine rebooted, the network blinked) is replaced.
    if (entry && !(await entry.transport.then((t) => t.isOpen).catch(() => false))) {
      if (this.open.get(machineId) === entry) this.open.delete(machineId);
      entry = this.open.get(machineId);
    }
    if (!entry) {
      const made: Entry = { transport: undefined!, usedAt: Date.now(), busy: 0 };
      made.transport = this.provider.transport(machineId).then((t) => leased(t, made));
      made.transport.catch(() => {
        if (this.open.get(machineId) === made) this.open.delete(machineId);
      });
      this.open.set(machineId, made);
      entry = made;
    }
    entry.usedAt = Date.now();
    return entry.transport;
  }

  async release(machineId: string): Promise<void> {
    const entry = this.open.get(machineId);
    this.open.delete(machineId);
    await entry?.transport.then((t) => t.close()).catch(() => {});
  }

  /** Closes connections nobody used for a while; never one a command or a transfer is using. */
  private closeIdle() {
    for (const [id, entry] of this.open) {
      if (entry.busy === 0 && Date.now() - entry.usedAt > IDLE_CLOSE_MS) void this.release(id);
    }
  }

  async closeAll(): Promise<void> {
    clearInterval(this.sweeper);
    await Promise.all([...this.open.keys()].map((id) => this.release(id)));
  }
}

interface Entry {
  transport: Promise<Transport>;
  usedAt: number;
  /** Operations under way: a 15-minute clone keeps its connection. */
  busy: number;
}

/** The transport, counting its operations in `entry` so that the sweeper sees them. */
function leased(t: Transport, entry: Entry): Transport {
  const track =
    <A extends unknown[], R>(fn: (...args: A) => Promise<R>) =>
    async (...args: A): Promise<R> => {
      entry.busy++;
      entry.usedAt = Date.now();
      try {
        return await fn(...args);
      } finally {
        entry.busy--;
        entry.usedAt = Date.now();
      }
    };
  return {
    paths: t.paths,
    get isOpen() {
      return t.isOpen;
    },
    exec: track(t.exec.bind(t)),
    writeFile: track(t.writeFile.bind(t)),
    appendFile: track(t.appendFile.bind(t)),
    exists: track(t.exists.bind(t)),
    readFile: track(t.readFile.bind(t)),
    // A terminal holds its lease until it ends: the sweeper never closes a connection under it.
    open: async (argv) => {
      entry.busy++;
      try {
        const session = await t.open(argv);
        void session.done.finally(() => {
          entry.busy--;
          entry.usedAt = Date.now();
        });
        return session;
      } catch (err) {
        entry.busy--;
        throw err;
      }
    },
    close: () => t.close(),
  };
}
