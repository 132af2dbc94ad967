/** The fault proxy the cluster tests rely on: each mode does what it says, against a local echo server. */
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { FaultProxy } from '../support/fault-proxy.js';

interface Peer {
  socket: net.Socket;
  received: string;
  error: NodeJS.ErrnoException | undefined;
  closed: boolean;
}

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function echoServer(): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
    socket.pipe(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return (server.address() as net.AddressInfo).port;
}

async function openProxy(): Promise<FaultProxy> {
  const proxy = await FaultProxy.open({ host: '127.0.0.1', port: await echoServer() });
  cleanups.push(() => proxy.close());
  return proxy;
}

function connect(port: number): Peer {
  const socket = net.connect({ host: '127.0.0.1', port });
  const peer: Peer = { socket, received: '', error: undefined, closed: false };
  socket.on('data', (chunk) => (peer.received += chunk.toString()));
  socket.on('error', (err) => (peer.error = err));
  socket.on('close', () => (peer.closed = true));
  cleanups.push(() => void socket.destroy());
  return peer;
}

describe('FaultProxy', () => {
  it('passes bytes both ways, in order', async () => {
    const proxy = await openProxy();
    const peer = connect(proxy.port);
    for (let i = 0; i < 50; i++) peer.socket.write(`${i},`);
    const expected = Array.from({ length: 50 }, (_, i) => `${i},`).join('');
    await expect.poll(() => peer.received).toBe(expected);
  });

  it('delays each chunk without reordering, also when switched back to pass', async () => {
    const proxy = await openProxy();
    const peer = connect(proxy.port);
    await expect.poll(() => proxy.connections).toBe(1);
    proxy.setMode('delay', 150);
    const sentAt = Date.now();
    peer.socket.write('a');
    await new Promise((resolve) => setImmediate(resolve));
    proxy.setMode('pass');
    peer.socket.write('b');
    await expect.poll(() => peer.received).toBe('ab');
    expect(Date.now() - sentAt).toBeGreaterThanOrEqual(140);
  });

  it('cut resets open connections and refuses new ones until it passes again', async () => {
    const proxy = await openProxy();
    const peer = connect(proxy.port);
    peer.socket.write('x');
    await expect.poll(() => peer.received).toBe('x');

    proxy.setMode('cut');
    await expect.poll(() => peer.closed).toBe(true);
    expect(peer.error?.code).toBe('ECONNRESET');
    const refused = connect(proxy.port);
    await expect.poll(() => refused.closed).toBe(true);
    expect(refused.received).toBe('');

    proxy.setMode('pass');
    const again = connect(proxy.port);
    again.socket.write('y');
    await expect.poll(() => again.received).toBe('y');
  });

  it('black-hole keeps connections open but forwards nothing; after healing only new connections work', async () => {
    const proxy = await openProxy();
    const old = connect(proxy.port);
    old.socket.write('1');
    await expect.poll(() => old.received).toBe('1');

    proxy.setMode('black-hole');
    old.socket.write('2');
    const fresh = connect(proxy.port);
    fresh.socket.write('3');
    // Nothing arrives and nothing closes: only a timeout could tell.
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect([old.received, fresh.received, old.closed, fresh.closed]).toEqual(['1', '', false, false]);

    proxy.setMode('pass');
    old.socket.write('4');
    const healed = connect(proxy.port);
    healed.socket.write('5');
    await expect.poll(() => healed.received).toBe('5');
    expect(old.received).toBe('1');
  });
});
