/**
 * Builds the web chat page into web/dist, which the service serves at / (src/http/web-page.ts).
 * `npm run build:web` builds it (npm ci runs it through `prepare`); `npm run dev:web` serves it with
 * hot reload, proxying the API and /ws to a service on localhost:8080.
 */
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const service = 'http://localhost:8080';

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/',
  // sockjs-client still reads Node's `global`.
  define: { global: 'globalThis' },
  logLevel: 'warn',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    assetsDir: 'assets',
  },
  server: {
    proxy: {
      '/api': service,
      '/dev': service,
      '/ws': { target: service, ws: true },
    },
  },
});
