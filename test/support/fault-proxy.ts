/**
 * A TCP fault proxy for tests: put it in front of PostgreSQL or RabbitMQ and point the service at
 * `proxy.url`, then break the network on purpose. Only connections made through the proxy are
 * affected, so a test never disturbs the machine's server or anybody else's connections.
 *
 * Modes (switch at any time with `setMode`):
 * - `pass`: forward both ways.
 * - `cut`: destroy every open connection (the peers see a reset) and reset new ones at once, like a
 *   dead host that still answers with RST. Back to `pass`, new connections work again.
 * - `black-hole`: accept connections and swallow every byte both ways, forwarding nothing and never
 *   closing, like a partitioned network: only timeouts and heart-beats notice. Connections that were
 *   black-holed stay dead after the proxy heals (their byte streams lost data); new ones pass.
 * - `delay`: forward every chunk after `delayMs`, preserving order.
 */
import net from 'node:net';

export type FaultMode = 'pass' | 'cut' | 'black-hole' | 'delay';

interface Link {
  client: net.Socket;
  upstream: net.Socket;
  /** Swallowed a byte: the streams are out of step for ever. */
  broken: boolean;
}

export class FaultProxy {
  /** Connections accepted since the proxy opened (refused ones included). */
  accepted = 0;
  private currentMode: FaultMode = 'pass';
  private delayMs = 0;
  private readonly links = new Set<Link>();

  private constructor(
    private readonly server: net.Server,
    private readonly target: { host: string; port: number },
    /** host:port clients connect to. */
    readonly port: number,
  ) {}

  /** Listens on 127.0.0.1 (port 0) and forwards to `host:port`. */
  static async open(target: { host: string; port: number }): Promise<FaultProxy> {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const proxy = new FaultProxy(server, target, (server.address() as net.AddressInfo).port);
    server.on('connection', (socket) => proxy.accept(socket));
    return proxy;
  }

  /** A proxy for the host and port of `url` (postgres://, amqp://), and `url` rewritten to go through it. */
  static async forUrl(url: string, defaultPort: number): Promise<{ proxy: FaultProxy; url: string }> {
    const parsed = new URL(url);
    const proxy = await FaultProxy.open({ host: parsed.hostname, port: Number(parsed.port || defaultPort) });
    parsed.hostname = '127.0.0.1';
    parsed.port = String(proxy.port);
    return { proxy, url: parsed.toString() };
  }

  get mode(): FaultMode {
    return this.currentMode;
  }

  /** Open client connections through the proxy. */
  get connections(): number {
    return this.links.size;
  }

  setMode(mode: FaultMode, delayMs = 0): void {
    this.currentMode = mode;
    this.delayMs = delayMs;
    if (mode === 'cut') for (const link of this.links) this.destroy(link);
  }

  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const link of this.links) this.destroy(link);
    await closed;
  }

  private accept(client: net.Socket): void {
    this.accepted += 1;
    if (this.currentMode === 'cut') {
      client.on('error', () => undefined);
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(this.target);
    const link: Link = { client, upstream, broken: this.currentMode === 'black-hole' };
    this.links.add(link);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    this.pipe(link, client, upstream);
    this.pipe(link, upstream, client);
    const end = (): void => this.destroy(link);
    for (const socket of [client, upstream]) {
      socket.on('error', end);
      socket.on('close', end);
    }
  }

  private pipe(link: Link, from: net.Socket, to: net.Socket): void {
    // Chunks held back by `delay`, oldest first: later chunks queue behind them in any mode, so a
    // switch back to `pass` never reorders the stream.
    const held: Array<{ chunk: Buffer; due: number }> = [];
    let timer: NodeJS.Timeout | undefined;
    const flush = (): void => {
      timer = undefined;
      while (held.length > 0 && held[0]!.due <= Date.now()) {
        const { chunk } = held.shift()!;
        if (!to.destroyed && !link.broken) to.write(chunk);
      }
      if (held.length > 0) timer = setTimeout(flush, held[0]!.due - Date.now());
    };
    from.on('data', (chunk: Buffer) => {
      if (link.broken || this.currentMode === 'black-hole') {
        link.broken = true;
        return;
      }
      const delay = this.currentMode === 'delay' ? this.delayMs : 0;
      if (delay === 0 && held.length === 0) {
        if (!to.destroyed) to.write(chunk);
        return;
      }
      held.push({ chunk, due: Math.max(Date.now() + delay, held.at(-1)?.due ?? 0) });
      timer ??= setTimeout(flush, Math.max(0, held[0]!.due - Date.now()));
    });
    from.on('close', () => clearTimeout(timer));
  }

  private destroy(link: Link): void {
    if (!this.links.delete(link)) return;
    // A reset, not a FIN: what a peer sees when the path dies (an orderly close would look healthy).
    if (!link.client.destroyed) link.client.resetAndDestroy();
    if (!link.upstream.destroyed) link.upstream.resetAndDestroy();
  }
}
