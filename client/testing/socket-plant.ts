/**
 * Test sockets for ChatClient in Node: real `ws` WebSockets that a test can watch and break — see
 * every frame, swallow chosen incoming frames, add to outgoing ones, cut the connection at a chosen
 * moment.
 */
import type { IStompSocket } from '@stomp/stompjs';
import WebSocket from 'ws';
import type { WebSocketFactory } from '../stomp-transport.js';

/** What to do with an incoming frame: hand it to STOMP, swallow it, or swallow it and cut the connection. */
export type IncomingVerdict = 'pass' | 'drop' | 'drop-and-kill';

export class PlantedSocket implements IStompSocket {
  onclose: ((ev?: unknown) => unknown) | null = null;
  onerror: ((ev: unknown) => unknown) | null = null;
  onmessage: ((ev: unknown) => unknown) | null = null;
  onopen: ((ev?: unknown) => unknown) | null = null;
  /** Every frame written, as text. */
  readonly sent: string[] = [];
  private readonly ws: WebSocket;

  constructor(url: string, protocols: string[], private readonly plant: SocketPlant) {
    this.ws = new WebSocket(url, protocols);
    this.ws.binaryType = 'arraybuffer';
    this.ws.onopen = (ev) => this.onopen?.(ev);
    this.ws.onerror = (ev) => this.onerror?.(ev);
    this.ws.onclose = (ev) => this.onclose?.(ev);
    this.ws.onmessage = (ev) => {
      const text = typeof ev.data === 'string' ? ev.data : Buffer.from(ev.data as ArrayBuffer).toString('utf8');
      const verdict = this.plant.incoming(text, this);
      if (verdict === 'pass') this.onmessage?.(ev);
      else if (verdict === 'drop-and-kill') this.kill();
    };
  }

  get url(): string {
    return this.ws.url;
  }

  get readyState(): number {
    return this.ws.readyState;
  }

  get binaryType(): string {
    return this.ws.binaryType;
  }

  set binaryType(value: string) {
    this.ws.binaryType = value as 'arraybuffer';
  }

  send(data: string | ArrayBufferLike | Blob | ArrayBufferView): void {
    const text = this.plant.outgoing(typeof data === 'string' ? data : Buffer.from(data as ArrayBuffer).toString('utf8'), this);
    this.sent.push(text);
    this.ws.send(text);
  }

  close(): void {
    this.ws.close();
  }

  /** Cuts the TCP connection without a closing handshake, as a network failure would. */
  kill(): void {
    this.ws.terminate();
  }
}

export class SocketPlant {
  readonly sockets: PlantedSocket[] = [];
  /** Decides the fate of each incoming frame; passes everything by default. */
  filter: (frame: string, socket: PlantedSocket) => IncomingVerdict = () => 'pass';
  /** What goes out for each frame the client writes; the frame itself by default. */
  outgoing: (frame: string, socket: PlantedSocket) => string = (frame) => frame;

  readonly factory: WebSocketFactory = (url, protocols) => {
    const socket = new PlantedSocket(url, protocols, this);
    this.sockets.push(socket);
    return socket;
  };

  get current(): PlantedSocket {
    const socket = this.sockets.at(-1);
    if (!socket) throw new Error('no socket opened yet');
    return socket;
  }

  /** Text of every frame the client wrote whose command is `command`, on every socket. */
  framesSent(command: string): string[] {
    return this.sockets.flatMap((s) => s.sent).filter((f) => f.startsWith(`${command}\n`));
  }

  incoming(frame: string, socket: PlantedSocket): IncomingVerdict {
    return this.filter(frame, socket);
  }
}

/** A MESSAGE frame addressed to one destination. */
export const isMessageTo = (frame: string, destination: string): boolean => frame.startsWith('MESSAGE\n') && frame.includes(`\ndestination:${destination}\n`);
