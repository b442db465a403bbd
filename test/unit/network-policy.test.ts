import type { LookupAddress } from 'node:dns';
import { AddressRefusedError, NetworkPolicy, parseNetworkEntry } from '../../src/staging/network-policy.js';

const policy = new NetworkPolicy();
const rangeOf = (address: string, p = policy): string | undefined => p.refusal(address, address)?.range;

describe('NetworkPolicy', () => {
  it.each([
    ['127.0.0.1', 'loopback'],
    ['127.255.0.9', 'loopback'],
    ['::1', 'loopback'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:7f00:1', 'loopback'],
    ['0:0:0:0:0:ffff:7f00:0001', 'loopback'],
    ['10.20.30.40', 'private (RFC 1918)'],
    ['::ffff:10.0.0.1', 'private (RFC 1918)'],
    ['172.16.0.1', 'private (RFC 1918)'],
    ['172.31.255.255', 'private (RFC 1918)'],
    ['192.168.1.1', 'private (RFC 1918)'],
    ['100.64.0.1', 'shared (carrier-grade NAT, 100.64.0.0/10)'],
    ['100.127.255.255', 'shared (carrier-grade NAT, 100.64.0.0/10)'],
    ['169.254.169.254', 'link-local (where cloud metadata services answer)'],
    ['::ffff:169.254.169.254', 'link-local (where cloud metadata services answer)'],
    ['fe80::1', 'link-local'],
    ['fe80::1%eth0', 'link-local'],
    ['febf::1', 'link-local'],
    ['fc00::1', 'unique local (fc00::/7)'],
    ['fd12:3456::1', 'unique local (fc00::/7)'],
    ['0.0.0.0', 'unspecified ("this network", 0.0.0.0/8)'],
    ['0.1.2.3', 'unspecified ("this network", 0.0.0.0/8)'],
    ['::', 'unspecified'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['ff02::1', 'multicast'],
    ['255.255.255.255', 'broadcast'],
    ['240.0.0.1', 'reserved (240.0.0.0/4)'],
    ['::127.0.0.1', 'IPv4-compatible (deprecated)'],
    ['fec0::1', 'site-local (deprecated)'],
    ['64:ff9b::10.0.0.1', 'private (RFC 1918), through NAT64'],
    ['64:ff9b::7f00:1', 'loopback, through NAT64'],
  ])('refuses %s (%s)', (address, range) => {
    expect(rangeOf(address)).toBe(range);
  });

  it.each([
    '8.8.8.8',
    '1.1.1.1',
    '100.63.255.255',
    '100.128.0.1',
    '172.15.255.255',
    '172.32.0.1',
    '169.253.0.1',
    '192.167.1.1',
    '223.255.255.255',
    '::ffff:8.8.8.8',
    '64:ff9b::8.8.8.8',
    '2001:4860:4860::8888',
    '2a00:1450:4001:82a::200e',
    'fbff::1',
    'fe7f::1',
  ])('allows the public address %s', (address) => {
    expect(rangeOf(address)).toBeUndefined();
  });

  it('refuses what is not an address at all', () => {
    expect(rangeOf('not-an-address')).toBe('unparsable');
  });

  it('allows the networks, addresses and host names of its allowlist, and nothing next to them', () => {
    const allow = new NetworkPolicy([
      '10.1.0.0/16',
      '127.0.0.1',
      'fd00:1::/32',
      'data.example.org',
      '*.corp.example',
    ]);
    expect(rangeOf('10.1.255.255', allow)).toBeUndefined();
    expect(rangeOf('::ffff:10.1.0.5', allow)).toBeUndefined();
    expect(rangeOf('10.2.0.1', allow)).toBe('private (RFC 1918)');
    expect(rangeOf('127.0.0.1', allow)).toBeUndefined();
    expect(rangeOf('::ffff:127.0.0.1', allow)).toBeUndefined();
    expect(rangeOf('127.0.0.2', allow)).toBe('loopback');
    expect(rangeOf('fd00:1:ffff::1', allow)).toBeUndefined();
    expect(rangeOf('fd00:2::1', allow)).toBe('unique local (fc00::/7)');
    expect(allow.refusal('DATA.example.org.', '192.168.0.9')).toBeUndefined();
    expect(allow.refusal('x.data.example.org', '192.168.0.9')?.range).toBe('private (RFC 1918)');
    expect(allow.refusal('a.b.corp.example', '10.9.9.9')).toBeUndefined();
    expect(allow.refusal('corp.example', '10.9.9.9')?.range).toBe('private (RFC 1918)');
  });

  it('checks addresses written in a URL, brackets and all, and leaves names to the lookup', () => {
    expect(policy.checkLiteral('[::ffff:7f00:1]')?.message).toMatch(/^::ffff:7f00:1 \(loopback\): /);
    expect(policy.checkLiteral('127.0.0.1')).toBeInstanceOf(AddressRefusedError);
    expect(policy.checkLiteral('localhost')).toBeUndefined();
    expect(policy.checkLiteral('93.184.216.34')).toBeUndefined();
  });

  it('resolves names and refuses one with a refused address, in both forms of the lookup', async () => {
    const lookup = (p: NetworkPolicy, all: boolean) =>
      new Promise<{ err: Error | null; address: string | LookupAddress[] }>((resolve) =>
        p.lookup('localhost', { all }, (err, address) => resolve({ err, address })),
      );
    for (const all of [false, true]) {
      const refused = await lookup(policy, all);
      expect(refused.err).toBeInstanceOf(AddressRefusedError);
      expect(refused.err!.message).toMatch(/^localhost resolves to (127\.0\.0\.1|::1) \(loopback\): /);
    }
    const allowed = new NetworkPolicy(['127.0.0.0/8', '::1']);
    expect((await lookup(allowed, false)).address).toMatch(/^(127\.0\.0\.1|::1)$/);
    const all = (await lookup(allowed, true)).address as LookupAddress[];
    expect(all.map((a) => a.address)).toContain('127.0.0.1');
  });
});

describe('parseNetworkEntry', () => {
  it('reads networks, addresses and host names', () => {
    expect(parseNetworkEntry('10.1.0.0/16')).toMatchObject({ kind: 'network', network: { bits: 112 } });
    expect(parseNetworkEntry('fd00::/8')).toMatchObject({ kind: 'network', network: { bits: 8 } });
    expect(parseNetworkEntry('[::1]')).toMatchObject({ kind: 'network', network: { bits: 128 } });
    expect(parseNetworkEntry('Data.Example.org')).toEqual({ kind: 'host', name: 'data.example.org' });
    expect(parseNetworkEntry('*.example.org')).toEqual({ kind: 'host', name: '*.example.org' });
  });

  it.each([
    ['10.1.2.3/16', '"10.1.2.3/16" has bits set past its prefix length; did you mean 10.1.0.0/16?'],
    ['fd00::1/8', '"fd00::1/8" has bits set past its prefix length; did you mean fd00::/8?'],
    ['10.0.0.0/33', /is not a network: write an address, '\/' and a prefix length/],
    ['10.0.0.0/', /is not a network/],
    ['example.org/24', /is not a network/],
    ['bad host!', '"bad host!" is neither a network (10.1.0.0/16, fd00::/8), an address nor a host name'],
    ['', /is neither a network/],
  ])('explains what is wrong with %j', (text, problem) => {
    const out = parseNetworkEntry(text);
    expect(typeof out).toBe('string');
    if (typeof problem === 'string') expect(out).toBe(problem);
    else expect(out).toMatch(problem);
  });
});
