import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { isIPv4, isIPv6, type LookupFunction } from 'node:net';

/**
 * Which addresses a client's http(s) input may make the gateway connect to. A task's URL is chosen by
 * whoever can submit a task, and the gateway fetches it from inside the site's network: without this,
 * `http://169.254.169.254/...` reads cloud credentials and `http://127.0.0.1:6379/` talks to Redis.
 * Loopback, link-local, private, shared (CGNAT), multicast, broadcast and unspecified addresses are
 * refused unless `storage.http.allowedPrivateNetworks` lists the address's network or the URL's host.
 *
 * The check is on the address actually connected to: `lookup` below is the resolver of the fetcher's
 * own http(s) Agents, so a name that resolves to a public address when checked and a private one when
 * connecting (DNS rebinding) cannot slip through. Addresses written in the URL skip resolution in
 * Node, so the fetcher checks those with `checkLiteral` before each request.
 */

/** The config key an operator changes to let the gateway fetch from a private network. */
export const ALLOWLIST_KEY = 'storage.http.allowedPrivateNetworks';

/** An address as 16 bytes; an IPv4 address is held in its IPv4-mapped form (::ffff:a.b.c.d). */
type Address = Uint8Array;

interface Network {
  address: Address;
  /** Prefix length over the 128 bits. */
  bits: number;
}

/** One entry of the allowlist: a network, or a host name (`*.example.org` for every subdomain). */
export type NetworkEntry = { kind: 'network'; network: Network } | { kind: 'host'; name: string };

/** A connection the policy refuses; the fetcher turns it into a permanent failure of the input. */
export class AddressRefusedError extends Error {
  constructor(
    /** As the URL names it: a host name or an address. */
    readonly host: string,
    readonly address: string,
    /** `loopback`, `private (RFC 1918)`, ... */
    readonly range: string,
  ) {
    const what = host === address ? `${address} (${range})` : `${host} resolves to ${address} (${range})`;
    super(
      `${what}: the gateway does not download from loopback, link-local or private addresses unless ` +
        `${ALLOWLIST_KEY} lists the network or the host name`,
    );
    this.name = 'AddressRefusedError';
  }
}

export class NetworkPolicy {
  private readonly networks: Network[] = [];
  private readonly hosts: string[] = [];

  /** `entries`: the allowlist as configured; each must pass `parseNetworkEntry` (the schema checks). */
  constructor(entries: readonly string[] = []) {
    for (const text of entries) {
      const entry = parseNetworkEntry(text);
      if (typeof entry === 'string') throw new Error(`${ALLOWLIST_KEY}: ${entry}`);
      if (entry.kind === 'network') this.networks.push(entry.network);
      else this.hosts.push(entry.name);
    }
  }

  /** Whether the allowlist names this host (by name, not by address). */
  allowsHost(host: string): boolean {
    const name = normalizeHost(host);
    return this.hosts.some((h) => (h.startsWith('*.') ? name.endsWith(h.slice(1)) : name === h));
  }

  /** Why a connection to `address` (reached through `host`) is refused, or undefined when it is not. */
  refusal(host: string, address: string): AddressRefusedError | undefined {
    if (this.allowsHost(host)) return undefined;
    const bytes = parseAddress(address);
    // Not an address Node could connect to either; refuse rather than guess.
    if (!bytes) return new AddressRefusedError(host, address, 'unparsable');
    if (this.networks.some((n) => contains(n, bytes))) return undefined;
    const range = reservedRangeOf(bytes);
    return range ? new AddressRefusedError(host, address, range) : undefined;
  }

  /** For a URL whose host is an address (Node connects to it without resolving): the refusal, if any. */
  checkLiteral(hostname: string): AddressRefusedError | undefined {
    const bare = stripBrackets(hostname);
    return isIPv4(bare) || isIPv6(bare) ? this.refusal(bare, bare) : undefined;
  }

  /**
   * A resolver for `http.Agent`/`https.Agent`: the system's own (`dns.lookup`, so /etc/hosts and
   * search domains work as everywhere else), with every address checked before Node connects to it.
   * One refused address refuses the host: a public name has no business resolving to a private one.
   */
  readonly lookup: LookupFunction = (hostname, options, callback) => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses: LookupAddress[]) => {
      if (err) return callback(err, '');
      for (const a of addresses) {
        const refused = this.refusal(hostname, a.address);
        if (refused) return callback(refused, '');
      }
      const first = addresses[0];
      if (options.all) callback(null, addresses);
      else if (first) callback(null, first.address, first.family);
      else callback(Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' }), '');
    });
  };
}

/**
 * The reserved ranges, most specific first. IPv4 addresses are held IPv4-mapped, so an IPv6 socket's
 * `::ffff:127.0.0.1` falls in the loopback range like `127.0.0.1`; a NAT64 address (64:ff9b::/96)
 * reaches the IPv4 address it embeds, so it is judged by that.
 */
const IPV4_RANGES: ReadonlyArray<[string, string]> = [
  ['0.0.0.0/8', 'unspecified ("this network", 0.0.0.0/8)'],
  ['10.0.0.0/8', 'private (RFC 1918)'],
  ['100.64.0.0/10', 'shared (carrier-grade NAT, 100.64.0.0/10)'],
  ['127.0.0.0/8', 'loopback'],
  ['169.254.0.0/16', 'link-local (where cloud metadata services answer)'],
  ['172.16.0.0/12', 'private (RFC 1918)'],
  ['192.168.0.0/16', 'private (RFC 1918)'],
  ['224.0.0.0/4', 'multicast'],
  ['255.255.255.255/32', 'broadcast'],
  ['240.0.0.0/4', 'reserved (240.0.0.0/4)'],
];

const IPV6_RANGES: ReadonlyArray<[string, string]> = [
  ['::/128', 'unspecified'],
  ['::1/128', 'loopback'],
  ['::/96', 'IPv4-compatible (deprecated)'],
  ['fc00::/7', 'unique local (fc00::/7)'],
  ['fe80::/10', 'link-local'],
  ['fec0::/10', 'site-local (deprecated)'],
  ['ff00::/8', 'multicast'],
];

const RESERVED: ReadonlyArray<[Network, string]> = [...IPV4_RANGES, ...IPV6_RANGES].map(([cidr, name]) => [
  mustParseNetwork(cidr),
  name,
]);

const NAT64 = mustParseNetwork('64:ff9b::/96');

/** The name of the reserved range `address` falls in (see the tables above), or undefined. */
export function reservedRangeOf(address: Address): string | undefined {
  if (contains(NAT64, address)) {
    const inner = reservedRangeOf(mapped(address.subarray(12)));
    return inner && `${inner}, through NAT64`;
  }
  for (const [network, name] of RESERVED) if (contains(network, address)) return name;
  return undefined;
}

/**
 * One allowlist entry: `10.1.0.0/16`, `fd00::/8`, a single address, a host name, or `*.example.org`.
 * A string is the problem with it, for the configuration check.
 */
export function parseNetworkEntry(text: string): NetworkEntry | string {
  const trimmed = text.trim();
  if (trimmed.includes('/')) {
    const network = parseNetwork(trimmed);
    return typeof network === 'string' ? network : { kind: 'network', network };
  }
  const bare = stripBrackets(trimmed);
  if (isIPv4(bare) || isIPv6(bare)) {
    const address = parseAddress(bare)!;
    return { kind: 'network', network: { address, bits: 128 } };
  }
  if (HOST.test(trimmed)) return { kind: 'host', name: normalizeHost(trimmed) };
  return `${JSON.stringify(text)} is neither a network (10.1.0.0/16, fd00::/8), an address nor a host name`;
}

const LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?';
const HOST = new RegExp(`^(?:\\*\\.)?${LABEL}(?:\\.${LABEL})*\\.?$`);

function parseNetwork(text: string): Network | string {
  const [addressText = '', bitsText = '', ...rest] = text.split('/');
  const bare = stripBrackets(addressText);
  const v4 = isIPv4(bare);
  const max = v4 ? 32 : 128;
  if (rest.length > 0 || (!v4 && !isIPv6(bare)) || !/^\d{1,3}$/.test(bitsText) || Number(bitsText) > max) {
    return `${JSON.stringify(text)} is not a network: write an address, '/' and a prefix length (10.1.0.0/16, fd00::/8)`;
  }
  const address = parseAddress(bare)!;
  const network = { address, bits: Number(bitsText) + (v4 ? 96 : 0) };
  if (!contains(network, address) || !hostBitsClear(network)) {
    return `${JSON.stringify(text)} has bits set past its prefix length; did you mean ${format(network)}?`;
  }
  return network;
}

function mustParseNetwork(text: string): Network {
  const network = parseNetwork(text);
  if (typeof network === 'string') throw new Error(network);
  return network;
}

/** 16 bytes for an IPv4 or IPv6 address (a zone id is dropped), or undefined when it is neither. */
export function parseAddress(text: string): Address | undefined {
  const bare = stripBrackets(text).split('%', 1)[0]!;
  if (isIPv4(bare)) return mapped(bare.split('.').map(Number));
  if (!isIPv6(bare)) return undefined;
  let head = bare;
  let tail: number[] = [];
  const dotted = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(bare);
  if (dotted) {
    tail = dotted[2]!.split('.').map(Number);
    head = dotted[1]!.endsWith('::') ? dotted[1]! : dotted[1]!.slice(0, -1);
  }
  const groups = 8 - tail.length / 2;
  const [left = '', right] = head.split('::');
  const leftWords = left === '' ? [] : left.split(':');
  const rightWords = right === undefined || right === '' ? [] : right.split(':');
  const fill = right === undefined ? 0 : groups - leftWords.length - rightWords.length;
  const words = [...leftWords, ...Array<string>(fill).fill('0'), ...rightWords].map((w) => parseInt(w, 16));
  if (words.length !== groups) return undefined;
  const out = new Uint8Array(16);
  words.forEach((w, i) => {
    out[2 * i] = w >> 8;
    out[2 * i + 1] = w & 0xff;
  });
  out.set(tail, 12);
  return out;
}

function mapped(v4: ArrayLike<number>): Address {
  const out = new Uint8Array(16);
  out[10] = 0xff;
  out[11] = 0xff;
  out.set(Array.from(v4), 12);
  return out;
}

function contains(network: Network, address: Address): boolean {
  const full = network.bits >> 3;
  for (let i = 0; i < full; i++) if (network.address[i] !== address[i]) return false;
  const rest = network.bits & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return ((network.address[full]! ^ address[full]!) & mask) === 0;
}

function hostBitsClear(network: Network): boolean {
  for (let bit = network.bits; bit < 128; bit++) {
    if ((network.address[bit >> 3]! >> (7 - (bit & 7))) & 1) return false;
  }
  return true;
}

/** `network` with its host bits cleared, as CIDR text (for the hint in a message). */
function format(network: Network): string {
  const a = Uint8Array.from(network.address);
  for (let bit = network.bits; bit < 128; bit++) a[bit >> 3] = a[bit >> 3]! & ~(1 << (7 - (bit & 7)));
  const isMapped = a.subarray(0, 10).every((b) => b === 0) && a[10] === 0xff && a[11] === 0xff;
  if (isMapped && network.bits >= 96) return `${Array.from(a.subarray(12)).join('.')}/${network.bits - 96}`;
  const words = Array.from({ length: 8 }, (_, i) => ((a[2 * i]! << 8) | a[2 * i + 1]!).toString(16));
  // The URL parser writes IPv6 addresses in their canonical, shortest form.
  return `${new URL(`http://[${words.join(':')}]`).hostname.slice(1, -1)}/${network.bits}`;
}

function stripBrackets(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

function normalizeHost(host: string): string {
  return host.toLowerCase().replace(/\.$/, '');
}
