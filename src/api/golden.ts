import { Router } from '@koa/router';
import { z } from 'zod';
import { GOLDEN_NAME, type Provider } from '../providers/types.js';
import { HttpError, parseWith, readJson } from './http.js';

const nameSchema = z
  .string()
  .regex(GOLDEN_NAME, 'must be a golden claude name: lower-case letters, digits, - and _, at most 30');
const createSchema = z.strictObject({ name: nameSchema });

/**
 * Golden claudes for operators (the seed's recreate-gc.sh): list them, make an empty one to log in
 * to (`claude login` in its terminal), destroy one. Behind HUB_API_TOKEN like the rest of /api.
 */
export function goldenRoutes(deps: { provider: Provider }): Router {
  const { provider } = deps;
  const router = new Router({ sensitive: true, strict: true });

  router.get('/api/golden-claudes', async (ctx) => {
    ctx.body = { goldenClaudes: await provider.listGoldenClaudes() };
  });

  router.post('/api/golden-claudes', async (ctx) => {
    const { name } = parseWith(createSchema, await readJson(ctx));
    const exists = (await provider.goldenClaudes()).includes(name);
    if (exists) {
      throw new HttpError(
        409,
        'exists',
        `name: golden claude "${name}" exists already; DELETE /api/golden-claudes/${name} first to recreate it`,
        'name',
      );
    }
    ctx.status = 201;
    ctx.body = await provider.createGoldenClaude(name);
  });

  router.delete('/api/golden-claudes/:name', async (ctx) => {
    const name = parseWith(nameSchema, ctx.params.name);
    if (!(await provider.destroyGoldenClaude(name))) {
      throw new HttpError(404, 'not-found', `there is no golden claude "${name}"`);
    }
    ctx.status = 204;
  });

  return router;
}
