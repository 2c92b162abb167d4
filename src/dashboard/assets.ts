import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

export interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

let built: Promise<Map<string, Asset>> | undefined;

/**
 * The dashboard's script (src/dashboard/client, with xterm.js, bundled by esbuild when the first hub
 * of the process starts: one file, no build step to forget) and its stylesheets.
 */
export function buildAssets(): Promise<Map<string, Asset>> {
  built ??= bundle().catch((err: unknown) => {
    built = undefined;
    throw err;
  });
  return built;
}

async function bundle(): Promise<Map<string, Asset>> {
  const bundle = await build({
    entryPoints: [path.join(here, 'client', 'app.ts')],
    bundle: true,
    format: 'esm',
    target: 'es2022',
    minify: true,
    write: false,
    logLevel: 'silent',
  });
  const xtermCss = await readFile(require.resolve('@xterm/xterm/css/xterm.css'));
  const css = await readFile(path.join(here, 'client', 'dashboard.css'));
  const asset = (body: Buffer | Uint8Array, type: string): Asset => {
    const b = Buffer.from(body);
    return { body: b, type, etag: `"${createHash('sha256').update(b).digest('hex').slice(0, 24)}"` };
  };
  return new Map([
    ['dashboard.js', asset(bundle.outputFiles[0]!.contents, 'text/javascript; charset=utf-8')],
    ['dashboard.css', asset(css, 'text/css; charset=utf-8')],
    ['xterm.css', asset(xtermCss, 'text/css; charset=utf-8')],
  ]);
}
