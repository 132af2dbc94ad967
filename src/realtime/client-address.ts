/**
 * The client's address as the nearest trusted proxy reports it, for per-address limits and for
 * binding SockJS sessions to their client. Behind a load balancer every peer address is the
 * balancer's, so the socket's address alone would put all clients in one bucket; trusting
 * X-Forwarded-For from anyone would let each client pick its own bucket. `proxy-addr` walks the
 * header from the peer inward and stops at the first hop that is not a trusted proxy: the same
 * rule Fastify applies to `request.ip` with the same setting.
 */
import type { IncomingMessage } from 'node:http';
import { isIPv6 } from 'node:net';
import proxyAddr from '@fastify/proxy-addr';

/** Whether the hop at `address` (0 = the socket's peer) is a proxy whose X-Forwarded-For we believe. */
export type TrustProxy = (address: string, hop: number) => boolean;

/** `loopback`, `linklocal`, `uniquelocal`, addresses and CIDRs; an empty list trusts no one. */
export function compileTrustProxy(trusted: readonly string[]): TrustProxy {
  return trusted.length === 0 ? () => false : proxyAddr.compile([...trusted]);
}

export function clientAddress(req: IncomingMessage, trust: TrustProxy): string {
  // A socket that already closed has no address; proxy-addr would return undefined for it.
  if (req.socket.remoteAddress === undefined) return '';
  const address = proxyAddr(req, trust) as string | undefined;
  return unmapIPv4(address ?? '');
}

/**
 * The bucket an address counts in for per-address limits: the address itself for IPv4, its /64
 * for IPv6 (one subscriber is routinely given a whole /64, so single IPv6 addresses cost nothing).
 */
export function addressBucket(address: string): string {
  const bare = address.replace(/%.*$/, '');
  if (!isIPv6(bare)) return bare;
  return `${expandIPv6(bare).slice(0, 4).join(':')}::/64`;
}

function unmapIPv4(address: string): string {
  return /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(address) ? address.slice(7) : address;
}

/** The eight 16-bit groups of an IPv6 address, `::` filled in and an IPv4 tail counted as two. */
function expandIPv6(address: string): string[] {
  const [head, tail] = address.includes('::') ? (address.split('::') as [string, string]) : [address, undefined];
  const groups = (part: string | undefined): string[] => {
    if (!part) return [];
    return part.split(':').flatMap((g) => (g.includes('.') ? ['v4', 'v4'] : [g.toLowerCase().replace(/^0+(?=.)/, '')]));
  };
  const left = groups(head);
  const right = groups(tail);
  const fill = tail === undefined ? [] : Array.from({ length: 8 - left.length - right.length }, () => '0');
  return [...left, ...fill, ...right];
}
