import { execFileSync } from 'node:child_process';
import { csvField, quote, quoteAll } from '../../src/shell/quote.js';
import { HOSTILE_STRINGS } from '../fixtures/hostile.js';

function bashEcho(words: string): string[] {
  // Each argument printed NUL-terminated, so newlines and spaces are visible as they are.
  const out = execFileSync('bash', ['-c', `printf '%s\\0' ${words}`], { encoding: 'utf8' });
  return out.split('\0').slice(0, -1);
}

describe('quote', () => {
  it.each(HOSTILE_STRINGS.map((s) => [JSON.stringify(s), s]))('gives bash exactly %s', (_label, value) => {
    expect(bashEcho(quote(value))).toEqual([value]);
  });

  it('keeps every word of a command apart', () => {
    expect(bashEcho(quoteAll(HOSTILE_STRINGS))).toEqual(HOSTILE_STRINGS);
  });

  it('leaves plain words readable', () => {
    expect(quote('/data/input.txt')).toBe('/data/input.txt');
    expect(quote('two words')).toBe("'two words'");
  });
});

describe('csvField', () => {
  it('quotes fields with commas or quotes, doubling inner quotes', () => {
    expect(csvField('src=/a')).toBe('src=/a');
    expect(csvField('src=/a,b')).toBe('"src=/a,b"');
    expect(csvField('src=/a"b')).toBe('"src=/a""b"');
  });
});
