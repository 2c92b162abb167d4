import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import { LocalProvider } from './local/provider.js';
import type { Provider } from './types.js';

/** The provider registry: THOPTER_PROVIDER names one. */
export function createProvider(config: Config, log: Logger): Provider {
  switch (config.provider) {
    case 'local':
      return new LocalProvider(config.dataDir, log.child({ provider: 'local' }));
    case 'fly':
      // loadConfig refuses fly until its provider exists; this keeps the switch exhaustive.
      throw new Error('THOPTER_PROVIDER=fly is not available in this version of the hub');
  }
}

export type { Provider } from './types.js';
