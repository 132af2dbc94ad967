/**
 * The one way the RabbitMQ adapters (the event bus and the send queue) open and close their AMQP
 * connection, so both reconnect, notice a dead broker and give up on a close alike.
 *
 * Lifecycle: `openAmqpConnection` (no I/O awaited: rabbitmq-client connects, and reconnects for
 * ever, in the background) → the adapter creates its publishers, consumers and channels →
 * `closeAmqpConnection` runs the adapter's graceful close, bounded by a timeout after which the
 * socket is destroyed.
 *
 * Logging: a lost connection is one warning, the failed attempts while the broker stays away are
 * debug lines, the reconnection one info line; flow control (connection.blocked) is a warning.
 */
import { Connection } from 'rabbitmq-client';
import type { AdapterLogger } from '../common/adapter-logger.js';
import { withTimeout } from '../common/timeout.js';

/** RabbitMQ's own default frame_max (the library asks for 8 KiB): a message's headers must fit one frame. */
const AMQP_FRAME_MAX = 131_072;

export interface AmqpConnectionOptions {
  /** amqp:// or amqps:// URL of the broker. */
  url: string;
  /** Shown by rabbitmqctl and in the logs. */
  connectionName: string;
  /** AMQP heart-beat in seconds: a silent (black-holed) broker is noticed after about twice this. Default 10. */
  heartbeatSec?: number | undefined;
  /** TCP + AMQP handshake limit per connection attempt. Default 5 s. */
  connectionTimeoutMs?: number | undefined;
  logger: AdapterLogger;
  /**
   * Called on every (re)connection. It is registered before anything the adapter creates on the
   * connection, so it runs before their own set-up on that connection.
   */
  onConnection?: () => void;
}

export function openAmqpConnection(options: AmqpConnectionOptions): Connection {
  const { connectionName, logger: log } = options;
  const connection = new Connection({
    url: options.url,
    connectionName,
    // The library's defaults (1 s steps up to 30 s, 60 s heartbeat) leave an instance deaf for
    // too long in a chat; reconnect fast and notice a dead peer within ~20 s.
    retryLow: 200,
    retryHigh: 5_000,
    heartbeat: options.heartbeatSec ?? 10,
    connectionTimeout: options.connectionTimeoutMs ?? 5_000,
    acquireTimeout: 10_000,
    // Nagle's algorithm would hold a small frame (a publish, an ack) back until the previous one is
    // acknowledged by the peer, which delays it by the peer's delayed-ACK timer.
    noDelay: true,
    frameMax: AMQP_FRAME_MAX,
  });
  let down = false;
  connection.on('error', (err: unknown) => {
    // Reconnect attempts fail once per backoff step while the broker is away: warn once.
    if (down) log.debug({ err, connection: connectionName }, 'rabbitmq connection attempt failed');
    else log.warn({ err, connection: connectionName }, 'rabbitmq connection lost, reconnecting');
    down = true;
  });
  connection.on('connection', () => {
    if (down) log.info({ connection: connectionName }, 'rabbitmq reconnected');
    down = false;
    options.onConnection?.();
  });
  connection.on('connection.blocked', (reason: string) => log.warn({ reason, connection: connectionName }, 'rabbitmq blocked publishing'));
  connection.on('connection.unblocked', () => log.info({ connection: connectionName }, 'rabbitmq unblocked publishing'));
  return connection;
}

/**
 * Waits for `graceful` (the adapter's orderly close, ending with `connection.close()`) at most
 * `timeoutMs`; if it fails or takes longer, destroys the socket, so a stop never hangs on a broker
 * that does not answer.
 */
export async function closeAmqpConnection(connection: Connection, graceful: Promise<void>, timeoutMs: number, log: AdapterLogger): Promise<void> {
  try {
    await withTimeout(graceful, timeoutMs, () => new Error('graceful close timed out'));
  } catch (err) {
    log.warn({ err }, 'rabbitmq close failed, destroying the connection');
    connection.unsafeDestroy();
  }
}
