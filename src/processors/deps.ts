import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { Prompts } from '../prompts.js';
import type { Provider, Transport } from '../providers/types.js';
import type { HubQueues } from '../queues/index.js';
import type { RecordChanges } from '../thopters/changes.js';
import type { ThopterStore } from '../thopters/store.js';

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
  /** Tells the thopter's issue (if it came from one) that its state changed; cheap, deduplicated. */
  announce(thopterId: string): Promise<void>;
}

/** A transport unused this long is closed; the next phase on this hub opens a new one. */
const IDLE_CLOSE_MS = 60_000;

/**
 * One transport per machine, shared by the phases of its provision that run on this hub (on Fly,
 * one SSH connection instead of one per phase). Phases run on any hub and each hub keeps its own,
 * so entries close themselves once idle, and at once when the machine is torn down here.
 */
export class TransportPool {
  private readonly open = new Map<string, { transport: Promise<Transport>; usedAt: number }>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly provider: Provider) {
    this.sweeper = setInterval(() => this.closeIdle(), IDLE_CLOSE_MS / 2);
    this.sweeper.unref();
  }

  async get(machineId: string): Promise<Transport> {
    let entry = this.open.get(machineId);
    // A connection that broke (the machine rebooted, the network blinked) is replaced.
    if (entry && !(await entry.transport.then((t) => t.isOpen).catch(() => false))) {
      this.open.delete(machineId);
      entry = undefined;
    }
    if (!entry) {
      const transport = this.provider.transport(machineId);
      transport.catch(() => this.open.delete(machineId));
      entry = { transport, usedAt: Date.now() };
      this.open.set(machineId, entry);
    }
    entry.usedAt = Date.now();
    return entry.transport;
  }

  async release(machineId: string): Promise<void> {
    const entry = this.open.get(machineId);
    this.open.delete(machineId);
    await entry?.transport.then((t) => t.close()).catch(() => {});
  }

  private closeIdle() {
    for (const [id, entry] of this.open) {
      if (Date.now() - entry.usedAt > IDLE_CLOSE_MS) void this.release(id);
    }
  }

  async closeAll(): Promise<void> {
    clearInterval(this.sweeper);
    await Promise.all([...this.open.keys()].map((id) => this.release(id)));
  }
}
