/**
 * deploy/nginx/chat.conf: `nginx -t` accepts it, and a real nginx running it in front of two small
 * upstream servers does what the file promises: a SockJS session's requests stay on one instance,
 * other requests spread, WebSocket upgrades pass, streamed responses are not held back, and the
 * instances see the client's address, not one the client made up. Needs Debian's nginx (.ci/run
 * installs it); skipped, and said so, where it is missing.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { type WebSocket, WebSocketServer } from 'ws';
import WebSocketClient from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { missingTool } from './deploy-support.js';
import { CHAT_CONF, freePort, writeNginxConfig } from '../../tools/local-nginx.js';

const nginxMissing = missingTool('nginx', ['-v'], 'apt-get install -y nginx; .ci/run does it');
if (nginxMissing) console.warn(`\n*** SKIPPING the nginx config tests: ${nginxMissing} ***\n`);



/** A stand-in instance: answers with its name, the X-Forwarded-For it got, and streams on /stream. */
function upstream(name: string): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer((req, res) => {
    if (req.url === '/ws/stream') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first\n');
      setTimeout(() => res.end('last\n'), 1500);
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ name, xff: req.headers['x-forwarded-for'] ?? null }));
  });
  const wss = new WebSocketServer({ server, path: '/ws' });
  wss.on('connection', (socket: WebSocket) => socket.on('message', (data) => socket.send(`${name}:${String(data)}`)));
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ server, port: (server.address() as net.AddressInfo).port })));
}

/** A main nginx.conf that includes chat.conf as deployed, with its upstream file beside it. */
function writeConfig(dir: string, upstreamPorts: readonly number[], listenPort: number | undefined): string {
  return writeNginxConfig({ dir, upstreams: upstreamPorts.map((p) => `127.0.0.1:${p}`), listenPort, workerConnections: 256 });
}

describe.skipIf(!!nginxMissing)(`nginx load balancer config${nginxMissing ? ` (skipped: ${nginxMissing})` : ''}`, () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'chat-nginx-'));
  const servers: http.Server[] = [];
  let nginx: ChildProcess | undefined;
  let base = '';

  beforeAll(async () => {
    const a = await upstream('a');
    const b = await upstream('b');
    servers.push(a.server, b.server);
    const port = await freePort();
    const conf = writeConfig(dir, [a.port, b.port], port);
    nginx = spawn('nginx', ['-p', dir, '-c', conf, '-e', 'stderr', '-g', 'daemon off;'], { stdio: ['ignore', 'inherit', 'inherit'] });
    base = `http://127.0.0.1:${port}`;
    for (let i = 0; i < 100; i++) {
      if (await fetch(`${base}/api/ping`).then(() => true, () => false)) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('nginx did not start answering');
  }, 30_000);

  afterAll(async () => {
    nginx?.kill('SIGQUIT');
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    rmSync(dir, { recursive: true, force: true });
  });

  it('nginx -t accepts chat.conf as it is in the repository', () => {
    const check = mkdtempSync(path.join(os.tmpdir(), 'chat-nginx-t-'));
    try {
      const conf = writeConfig(check, [8081, 8082, 8083], undefined);
      const result = spawnSync('nginx', ['-t', '-p', check, '-c', conf, '-e', 'stderr'], { encoding: 'utf8' });
      expect(result.status, result.stderr).toBe(0);
      expect(result.stderr).toMatch(/test is successful/);
    } finally {
      rmSync(check, { recursive: true, force: true });
    }
  });

  const get = async (url: string, headers: Record<string, string> = {}): Promise<{ name: string; xff: string | null }> =>
    (await (await fetch(`${base}${url}`, { headers })).json()) as { name: string; xff: string | null };

  it('keeps every request of a SockJS session on one instance, and spreads the sessions', async () => {
    const seen = new Set<string>();
    for (let s = 0; s < 16; s++) {
      const session = `s${s}x${Math.random().toString(36).slice(2, 8)}`;
      const names = new Set<string>();
      for (const transport of ['xhr_streaming', 'xhr_send', 'xhr', 'xhr_send', 'eventsource']) names.add((await get(`/ws/${100 + s}/${session}/${transport}`)).name);
      expect([...names], session).toHaveLength(1);
      seen.add([...names][0]!);
    }
    expect([...seen].sort()).toEqual(['a', 'b']);
  });

  it('spreads requests that belong to no SockJS session', async () => {
    const names = new Set<string>();
    for (let i = 0; i < 24; i++) names.add((await get('/api/chat/sessions')).name);
    expect([...names].sort()).toEqual(['a', 'b']);
  });

  it('tells the instance the client address, not one the client sent', async () => {
    expect((await get('/api/chat/sessions', { 'x-forwarded-for': '203.0.113.9' })).xff).toBe('127.0.0.1');
  });

  it('passes WebSocket upgrades on /ws', async () => {
    const socket = new WebSocketClient(`${base.replace('http', 'ws')}/ws`);
    const reply = await new Promise<string>((resolve, reject) => {
      socket.once('open', () => socket.send('ping'));
      socket.once('message', (data) => resolve(String(data)));
      socket.once('error', reject);
    });
    socket.close();
    expect(reply).toMatch(/^[ab]:ping$/);
  });

  it('/ws has hour-long timeouts and no response buffering', () => {
    const location = /location \/ws \{([^}]*)\}/.exec(readFileSync(CHAT_CONF, 'utf8'))![1]!;
    expect(Number(/proxy_read_timeout (\d+)s;/.exec(location)![1])).toBeGreaterThanOrEqual(3600);
    expect(Number(/proxy_send_timeout (\d+)s;/.exec(location)![1])).toBeGreaterThanOrEqual(3600);
    expect(location).toMatch(/proxy_buffering off;/);
  });

  // nginx 1.22 passes these bytes on even with buffering on; this guards the behaviour end to end,
  // the test above the directive.
  it('does not hold back a streamed response under /ws (xhr-streaming, eventsource)', async () => {
    const started = Date.now();
    const response = await fetch(`${base}/ws/stream`);
    const reader = response.body!.getReader();
    const first = await reader.read();
    const firstAfter = Date.now() - started;
    expect(new TextDecoder().decode(first.value)).toBe('first\n');
    expect(firstAfter).toBeLessThan(1200);
    await reader.cancel();
  });
});
