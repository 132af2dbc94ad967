/**
 * Our record of each live SockJS HTTP session (xhr, xhr-streaming, eventsource): who opened it,
 * whether and as whom it authenticated, and the connection it feeds.
 *
 * sockjs-node finds a session by the id in the URL alone, so without this anyone who learns an id
 * could post frames into it (acting as its user) or poll its messages away. An entry is created
 * when a request opens a new session and deleted when sockjs-node closes that session, so the
 * table never outlives what it guards; a session that has not authenticated holds a pending slot
 * (see PendingConnections), which is what bounds the table's size against anonymous floods.
 */
import type { Connection as SockJsConnection } from 'sockjs';
import type { PendingSlot } from './pending-connections.js';
import type { StompConnection } from './stomp/stomp-connection.js';

/** What identifies the client that sent a request, as far as a credential-less request can. */
export interface SockJsClient {
  /** Client address as the trusted proxy reports it. */
  readonly address: string;
  readonly userAgent: string;
  readonly origin: string | undefined;
}

export class SockJsSessionEntry {
  /** The first Origin seen: same-origin GETs (EventSource) carry none, the POSTs after them do. */
  private origin: string | undefined;
  /** Set once CONNECT succeeded: the session now acts as this user. */
  callerEmail: string | undefined;
  sock: SockJsConnection | undefined;
  conn: StompConnection | undefined;
  /** An xhr_send is being read: sockjs-client sends one at a time, so a second one is not ours. */
  sending = false;
  /** Bytes of xhr_send bodies taken before CONNECT succeeded. */
  preConnectBytes = 0;
  /** When our STOMP connection ended; the client may still fetch the final frames for a while. */
  endedAt: number | undefined;

  constructor(
    readonly id: string,
    readonly opener: SockJsClient,
    /** Held until the session authenticates or closes. */
    public slot: PendingSlot | undefined,
  ) {
    this.origin = opener.origin;
  }

  /**
   * Whether a request comes from the client that opened the session: same address and user agent,
   * and no Origin other than the one it uses. Before CONNECT this is all that ties the session to
   * anyone; after it, the session also carries its caller and keeps the same rule.
   */
  admits(client: SockJsClient): boolean {
    if (client.address !== this.opener.address || client.userAgent !== this.opener.userAgent) return false;
    if (client.origin === undefined) return true;
    if (this.origin === undefined) this.origin = client.origin;
    return this.origin === client.origin;
  }

  authenticated(callerEmail: string): void {
    this.callerEmail = callerEmail;
    this.slot?.release();
    this.slot = undefined;
  }
}

export class SockJsSessionTable {
  private readonly entries = new Map<string, SockJsSessionEntry>();

  get(id: string): SockJsSessionEntry | undefined {
    return this.entries.get(id);
  }

  open(id: string, opener: SockJsClient, slot: PendingSlot): SockJsSessionEntry {
    const entry = new SockJsSessionEntry(id, opener, slot);
    this.entries.set(id, entry);
    return entry;
  }

  /** Forgets the session and gives back its slot if it still held one. */
  close(entry: SockJsSessionEntry): void {
    entry.slot?.release();
    entry.slot = undefined;
    if (this.entries.get(entry.id) === entry) this.entries.delete(entry.id);
  }
}
