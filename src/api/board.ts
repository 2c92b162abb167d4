import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { KoaAdapter } from '@bull-board/koa';
import type { Queue } from 'bullmq';

export const BOARD_PATH = '/admin/queues';

/** Bull Board over the hub's queues. It has no auth of its own: mount it behind the hub's. */
export function bullBoard(queues: Queue[]) {
  const serverAdapter = new KoaAdapter();
  serverAdapter.setBasePath(BOARD_PATH);
  createBullBoard({
    queues: queues.map((q) => new BullMQAdapter(q, { readOnlyMode: false })),
    serverAdapter,
    options: { uiConfig: { boardTitle: 'Thopter Swarm' } },
  });
  return serverAdapter.registerPlugin();
}
