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
}

/**
 * One transport per machine, shared by every phase of its provision (on Fly, one SSH connection
 * instead of one per phase). Released when the machine is torn down.
 */
export class TransportPool {
  private readonly open = new Map<string, Promise<Transport>>();
  constructor(private readonly provider: Provider) {}

  get(machineId: string): Promise<Transport> {
    let t = this.open.get(machineId);
    if (!t) {
      t = this.provider.transport(machineId);
      t.catch(() => this.open.delete(machineId));
      this.open.set(machineId, t);
    }
    return t;
  }

  async release(machineId: string): Promise<void> {
    const t = this.open.get(machineId);
    this.open.delete(machineId);
    await t?.then((x) => x.close()).catch(() => {});
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.open.keys()].map((id) => this.release(id)));
  }
}
