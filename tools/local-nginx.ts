/**
 * Runs Debian's nginx, unprivileged, with deploy/nginx/chat.conf exactly as deployed: the local
 * cluster (`npm run cluster`) and the tests put it in front of instances on this machine. Only the
 * listen address changes (port 8080 may be taken, and loopback is enough); the upstream list is
 * the generated chat-upstreams.conf the deployed file includes.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const CHAT_CONF = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../deploy/nginx/chat.conf');

const hasIpv6Loopback = (): boolean => existsSync('/proc/net/if_inet6') && readFileSync('/proc/net/if_inet6', 'utf8').includes(' lo');

/** Why nginx cannot run here, or undefined when it can. */
export function nginxMissing(): string | undefined {
  const probe = spawnSync('nginx', ['-v'], { encoding: 'utf8' });
  return probe.error ? `nginx is not installed (apt-get install -y nginx; .ci/run does it)` : undefined;
}

/** A port nothing listens on right now (for servers, like nginx, that cannot be told port 0). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
    server.once('error', reject);
  });
}

export interface NginxSite {
  /** A fresh directory for the config, pid and temp files. */
  dir: string;
  /** `host:port` of each instance. */
  upstreams: readonly string[];
  /** Where nginx listens (127.0.0.1); undefined keeps chat.conf's own `listen 8080` lines. */
  listenPort: number | undefined;
  workerConnections?: number;
}

/** Writes nginx.conf (including chat.conf as deployed) and chat-upstreams.conf; returns nginx.conf's path. */
export function writeNginxConfig(site: NginxSite): string {
  const { dir, listenPort } = site;
  writeFileSync(path.join(dir, 'chat-upstreams.conf'), site.upstreams.map((u) => `server ${u} max_fails=1 fail_timeout=5s;`).join('\n') + '\n');
  let chat = readFileSync(CHAT_CONF, 'utf8');
  if (listenPort !== undefined) {
    chat = chat.replace(/listen 8080;/, `listen 127.0.0.1:${listenPort};`).replace(/listen \[::\]:8080;/, hasIpv6Loopback() ? `listen [::1]:${listenPort};` : '');
    if (/listen (\[::\]:)?8080;/.test(chat)) throw new Error('chat.conf listens on 8080 in a way this launcher does not rewrite');
  }
  writeFileSync(path.join(dir, 'chat.conf'), chat);
  const main = path.join(dir, 'nginx.conf');
  writeFileSync(
    main,
    [
      `pid ${dir}/nginx.pid;`,
      'error_log stderr warn;',
      'worker_processes 1;',
      `events { worker_connections ${site.workerConnections ?? 4096}; }`,
      'http {',
      '  access_log off;',
      ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${dir}/${t}_temp;`),
      `  include ${listenPort === undefined ? CHAT_CONF : path.join(dir, 'chat.conf')};`,
      '}',
    ].join('\n'),
  );
  return main;
}

export interface RunningNginx {
  url: string;
  process: ChildProcess;
  exited: Promise<number | string>;
  /** Graceful stop (SIGQUIT), then removes its directory. */
  stop(): Promise<void>;
}

/** Starts nginx in front of `upstreams` on 127.0.0.1:`port` and waits until it answers. */
export async function startNginx(upstreams: readonly string[], port: number, options: { stdio?: 'inherit' | 'pipe' } = {}): Promise<RunningNginx> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'chat-nginx-'));
  const conf = writeNginxConfig({ dir, upstreams, listenPort: port });
  const child = spawn('nginx', ['-p', dir, '-c', conf, '-e', 'stderr', '-g', 'daemon off;'], { stdio: ['ignore', options.stdio ?? 'inherit', options.stdio ?? 'inherit'] });
  const exited = new Promise<number | string>((resolve) => child.once('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  const url = `http://127.0.0.1:${port}`;
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGQUIT');
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) break;
    if (await fetch(`${url}/health/live`, { signal: AbortSignal.timeout(1_000) }).then(() => true, () => false)) return { url, process: child, exited, stop };
    await new Promise((r) => setTimeout(r, 100));
  }
  await stop();
  throw new Error(`nginx did not start answering on ${url}`);
}
