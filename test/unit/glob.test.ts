import { compileGlob, hasWildcard } from '../../src/staging/glob.js';

const TABLE: Array<[pattern: string, path: string, matches: boolean]> = [
  // `*` stays within one segment
  ['/out/*.txt', '/out/a.txt', true],
  ['/out/*.txt', '/out/.txt', true],
  ['/out/*.txt', '/out/a/b.txt', false],
  ['/out/*.txt', '/out/a.txt.gz', false],
  ['/out/a*b*c', '/out/abc', true],
  ['/out/a*b*c', '/out/aXbYc', true],
  ['/out/a*b*c', '/out/aXbY/c', false],
  ['/out/*/x', '/out/d/x', true],
  ['/out/*/x', '/out/x', false],
  // `?` is one character other than `/`
  ['/out/?.log', '/out/a.log', true],
  ['/out/?.log', '/out/ab.log', false],
  ['/out/a?b', '/out/a/b', false],
  ['/out/?.log', '/out/é.log', true],
  // classes, negated classes, ranges; never `/`
  ['/out/[abc].txt', '/out/b.txt', true],
  ['/out/[abc].txt', '/out/d.txt', false],
  ['/out/[a-c].txt', '/out/c.txt', true],
  ['/out/[a-c].txt', '/out/C.txt', false],
  ['/out/[!a-c].txt', '/out/d.txt', true],
  ['/out/[!a-c].txt', '/out/a.txt', false],
  ['/out/[^a-c].txt', '/out/d.txt', true],
  ['/out/x[!a]y', '/out/x/y', false],
  ['/out/[]]', '/out/]', true],
  ['/out/[a-]', '/out/-', true],
  ['/out/[.txt', '/out/[.txt', true],
  // literal characters that mean something in regular expressions are plain text
  ['/out/a.b+(c)|$^{d}\\*', '/out/a.b+(c)|$^{d}\\x', true],
  ['/out/a.b', '/out/aXb', false],
  // `**` crosses segments
  ['/out/**', '/out/a/b/c.txt', true],
  ['/out/**.txt', '/out/a/b/c.txt', true],
  ['/out/**.txt', '/out/a/b/c.log', false],
  ['/out/a**', '/out/abc/d', true],
  ['/out/**/x.txt', '/out/a/x.txt', true],
  ['/out/**/x.txt', '/out/a/b/x.txt', true],
  ['/out/**/x.txt', '/out/a/bx.txt', false],
  // and a whole-segment `**` also matches zero directories
  ['/out/**/x.txt', '/out/x.txt', true],
  ['/out/**/x.txt', '/out/ax.txt', false],
  ['/**/x.txt', '/x.txt', true],
  ['/out/**/*.bam', '/out/s1.bam', true],
  ['/out/**/d/**/*.bam', '/out/d/s1.bam', true],
  ['/out/**/d/**/*.bam', '/out/p/d/q/r/s1.bam', true],
  ['/out/**/d/**/*.bam', '/out/pd/s1.bam', false],
  // anchored at both ends
  ['/out/a', '/out/ab', false],
  ['/out/a', '/prefix/out/a', false],
];

describe('compileGlob', () => {
  it.each(TABLE)('matches %s against %s: %s', (pattern, path, matches) => {
    expect(compileGlob(pattern)(path)).toBe(matches);
  });

  it('answers a pattern of many ** against a long name without backtracking', () => {
    const name = `/out/${'a'.repeat(4000)}`;
    expect(compileGlob(`/out/${'**a'.repeat(16)}b`)(name)).toBe(false);
    expect(compileGlob(`/out/${'**a'.repeat(16)}`)(name)).toBe(true);
    expect(compileGlob(`/out/${'**a'.repeat(200)}b`)(`${name}/${'a'.repeat(4000)}`)).toBe(false);
  });

  it('answers a pattern of many * against a long name without backtracking', () => {
    const name = `/out/${'a'.repeat(4000)}`;
    expect(compileGlob(`/out/${'*a'.repeat(30)}*b`)(name)).toBe(false);
    expect(compileGlob(`/out/${'*a'.repeat(30)}`)(name)).toBe(true);
    expect(compileGlob(`/out/${'?*'.repeat(100)}b`)(name)).toBe(false);
    expect(compileGlob(`/out/${'[a]*'.repeat(100)}b`)(name)).toBe(false);
  });

  it('answers many whole-segment ** against a deep path without backtracking', () => {
    const deep = `/out${'/a'.repeat(2000)}/x`;
    expect(compileGlob(`/out${'/**'.repeat(40)}/y`)(deep)).toBe(false);
    expect(compileGlob(`/out${'/**'.repeat(40)}/x`)(deep)).toBe(true);
  });
});

describe('hasWildcard', () => {
  it('tells wildcard paths from literal ones', () => {
    expect(hasWildcard('/out/*.txt')).toBe(true);
    expect(hasWildcard('/out/a?')).toBe(true);
    expect(hasWildcard('/out/[ab]')).toBe(true);
    expect(hasWildcard('/out/plain.txt')).toBe(false);
  });
});
