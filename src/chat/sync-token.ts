/**
 * The sync token: where a client's GET /api/chat/sync stands, as an opaque string (ADR 0017). It
 * wraps a ChangeStamp; clients only store it and send it back, so its form may change with its
 * version prefix.
 */
import { ChatError } from './chat-errors.js';
import type { ChangeStamp } from './ports.js';

const VERSION = 'v1';
const MAX_XID = (1n << 64n) - 1n;
const MAX_ID = (1n << 63n) - 1n;
const DECIMAL = /^(0|[1-9][0-9]{0,19})$/;

export function encodeSyncToken(stamp: ChangeStamp): string {
  return Buffer.from(`${VERSION}.${stamp.xid}.${stamp.id}`, 'utf8').toString('base64url');
}

/** The stamp a token names; anything that is not a token this service wrote is VALIDATION_FAILED. */
export function decodeSyncToken(token: unknown): ChangeStamp {
  const refuse = (): never => {
    throw new ChatError('VALIDATION_FAILED', 'since must be a token returned as next by an earlier sync', { field: 'since' });
  };
  if (typeof token !== 'string' || token.length === 0 || token.length > 128 || !/^[A-Za-z0-9_-]+$/.test(token)) return refuse();
  const parts = Buffer.from(token, 'base64url').toString('utf8').split('.');
  if (parts.length !== 3 || parts[0] !== VERSION) return refuse();
  const [, xid, id] = parts as [string, string, string];
  if (!DECIMAL.test(xid) || !DECIMAL.test(id) || BigInt(xid) > MAX_XID || BigInt(id) > MAX_ID) return refuse();
  return { xid, id };
}

/** Stamps in the order sync returns changes in. */
export function compareStamps(x: ChangeStamp, y: ChangeStamp): number {
  const byXid = BigInt(x.xid) - BigInt(y.xid);
  if (byXid !== 0n) return byXid < 0n ? -1 : 1;
  const byId = BigInt(x.id) - BigInt(y.id);
  return byId === 0n ? 0 : byId < 0n ? -1 : 1;
}
