/**
 * Serves the web chat page built by Vite into `web/dist` (`npm run build:web`, also run by
 * `npm ci` through `prepare`): `/` is index.html, never cached so a new build shows at once;
 * `/assets/*` are content-hashed files, cached for a year. Where the page has not been built, `/`
 * answers 503 with a page that says how to build it — the API works regardless.
 *
 * The directory is looked at on each request, so building while the service runs needs no restart.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifyStatic from '@fastify/static';
import type { FastifyInstance, FastifyReply } from 'fastify';

export const DEFAULT_WEB_ROOT = fileURLToPath(new URL('../../web/dist', import.meta.url));

export interface WebPageOptions {
  /** The built page; default `web/dist` of this checkout. */
  root?: string;
}

/**
 * The page talks only to its own origin: REST, and `/ws` over WebSocket or SockJS XHR. CSP 3
 * `'self'` covers ws:/wss: of the same host.
 */
const INDEX_HEADERS = {
  'cache-control': 'no-cache',
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

const NOT_BUILT = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>chat-service: page not built</title></head>
<body>
<h1>The web page has not been built</h1>
<p>This chat-service is running, and its API is available, but <code>web/dist</code> is missing.</p>
<p>Build the page with <code>npm run build:web</code> (<code>npm ci</code> does it too), then reload.</p>
</body></html>
`;

export default async function webPage(app: FastifyInstance, options: WebPageOptions = {}): Promise<void> {
  const root = path.resolve(options.root ?? DEFAULT_WEB_ROOT);
  const assets = path.join(root, 'assets');
  await app.register(fastifyStatic, { serve: false });

  const sendIndex = async (_request: unknown, reply: FastifyReply) => {
    if (!existsSync(path.join(root, 'index.html'))) {
      return reply.code(503).header('cache-control', 'no-store').type('text/html; charset=utf-8').send(NOT_BUILT);
    }
    return reply.headers(INDEX_HEADERS).sendFile('index.html', root, { cacheControl: false });
  };
  app.get('/', sendIndex);
  app.get('/index.html', sendIndex);

  app.get<{ Params: { '*': string } }>('/assets/*', async (request, reply) =>
    reply.header('x-content-type-options', 'nosniff').sendFile(request.params['*'], assets, { maxAge: '365d', immutable: true, dotfiles: 'deny' }),
  );
}
