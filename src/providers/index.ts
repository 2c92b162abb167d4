import type { Redis } from 'ioredis';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { FlyProvider } from './fly/provider.js';
import { LocalProvider } from './local/provider.js';
import type { Provider } from './types.js';

/** The provider registry: THOPTER_PROVIDER names one. */
export function createProvider(config: Config, log: Logger, redis: Redis): Provider {
  switch (config.provider) {
    case 'local':
      return new LocalProvider(config.dataDir, log.child({ provider: 'local' }), config.agentCommand);
    case 'fly':
      return new FlyProvider(config, redis, log.child({ provider: 'fly' }));
  }
}

export type { Provider } from './types.js';
