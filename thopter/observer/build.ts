import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const ENTRY = path.join(path.dirname(fileURLToPath(import.meta.url)), 'observer.ts');

/**
 * Bundles the observer into one ES module that plain `node` runs, with the same options as
 * `npm run build:observer`. Tests and benchmarks run what a thopter runs, not the sources.
 */
export async function buildObserver(outfile: string): Promise<string> {
  await build({
    entryPoints: [ENTRY],
    bundle: true,
    platform: 'node',
    target: 'node20',
    format: 'esm',
    outfile,
    logLevel: 'warning',
  });
  return outfile;
}
