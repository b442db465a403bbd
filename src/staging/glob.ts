/**
 * Output wildcards (TES 1.1) over whole container paths: `*` and `?` within one path segment, `[...]`
 * and `[!...]` (or `[^...]`) classes of one character other than `/`, `**` across segments. A `**`
 * that fills a whole segment also matches zero directories: `/out/` `**` `/x.txt` (written without
 * the spaces) matches `/out/x.txt` as well as `/out/a/b/x.txt`.
 *
 * A pattern is compiled into tokens once and matched by stepping the set of reachable token positions
 * through the path one character at a time, so a match costs at most tokens × characters steps
 * whatever the pattern: `**a**a**a...` against a long name cannot backtrack, as a regular expression
 * built from the pattern would.
 */

type Token =
  | { kind: 'char'; char: string }
  | { kind: 'one' }
  | { kind: 'class'; negated: boolean; singles: Set<string>; ranges: Array<[string, string]> }
  /** `*`: any run of characters other than `/`. */
  | { kind: 'segment' }
  /** `**`: any run of characters. */
  | { kind: 'any' }
  /** Takes no character: the next `skip` tokens may be passed over (a whole-segment `**` and its `/`). */
  | { kind: 'optional'; skip: number };

export type GlobMatcher = (path: string) => boolean;

export function hasWildcard(path: string): boolean {
  return /[*?[]/.test(path);
}

export function compileGlob(glob: string): GlobMatcher {
  const tokens = tokenize(glob);
  return (path) => matchTokens(tokens, path);
}

function tokenize(glob: string): Token[] {
  const tokens: Token[] = [];
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === '*') {
      if (glob[i + 1] !== '*') tokens.push({ kind: 'segment' });
      else {
        // A whole `**` segment may also stand for no directory at all.
        if (glob[i - 1] === '/' && glob[i + 2] === '/') tokens.push({ kind: 'optional', skip: 2 });
        tokens.push({ kind: 'any' });
        i++;
      }
    } else if (c === '?') tokens.push({ kind: 'one' });
    else if (c === '[') {
      // A `]` right after `[` (or `[!`) belongs to the class, as in shells.
      const end = glob.indexOf(']', i + 2);
      if (end < 0) tokens.push({ kind: 'char', char: c });
      else {
        tokens.push(parseClass(glob.slice(i + 1, end)));
        i = end;
      }
    } else tokens.push({ kind: 'char', char: c });
  }
  return tokens;
}

function parseClass(body: string): Token {
  const negated = body.startsWith('!') || body.startsWith('^');
  const chars = [...(negated ? body.slice(1) : body)];
  const singles = new Set<string>();
  const ranges: Array<[string, string]> = [];
  for (let k = 0; k < chars.length; k++) {
    const from = chars[k]!;
    const to = chars[k + 2];
    if (chars[k + 1] === '-' && to !== undefined) {
      ranges.push([from, to]);
      k += 2;
    } else singles.add(from);
  }
  return { kind: 'class', negated, singles, ranges };
}

/** Does the token take this character? (`optional` takes none.) */
function takes(token: Token, c: string): boolean {
  switch (token.kind) {
    case 'char':
      return token.char === c;
    case 'one':
    case 'segment':
      return c !== '/';
    case 'class': {
      if (c === '/') return false;
      const listed = token.singles.has(c) || token.ranges.some(([from, to]) => from <= c && c <= to);
      return listed !== token.negated;
    }
    case 'any':
      return true;
    case 'optional':
      return false;
  }
}

function matchTokens(tokens: readonly Token[], path: string): boolean {
  const n = tokens.length;
  let current = new Uint8Array(n + 1);
  let next = new Uint8Array(n + 1);
  current[0] = 1;
  closeOverEmpty(tokens, current);
  for (const c of path) {
    next.fill(0);
    let alive = false;
    for (let t = 0; t < n; t++) {
      const token = tokens[t]!;
      if (!current[t] || !takes(token, c)) continue;
      alive = true;
      // A run stays where it is after a character; moving on from it is an empty step.
      next[token.kind === 'segment' || token.kind === 'any' ? t : t + 1] = 1;
    }
    if (!alive) return false;
    closeOverEmpty(tokens, next);
    [current, next] = [next, current];
  }
  return current[n] === 1;
}

/** The steps that take no character, all forward: runs may be empty, optional parts may be skipped. */
function closeOverEmpty(tokens: readonly Token[], states: Uint8Array): void {
  for (let t = 0; t < tokens.length; t++) {
    if (!states[t]) continue;
    const token = tokens[t]!;
    if (token.kind === 'segment' || token.kind === 'any') states[t + 1] = 1;
    else if (token.kind === 'optional') {
      states[t + 1] = 1;
      states[t + 1 + token.skip] = 1;
    }
  }
}
