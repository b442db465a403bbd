import { randomBytes } from 'node:crypto';

/**
 * Task ids sort by creation time (listing newest first is a reverse lexical walk) and carry 80 random
 * bits, so they cannot be guessed: 10 characters of millisecond time, then 16 of randomness, in
 * Crockford's base32 (ULID layout, lower case so that ids survive case-folding file systems).
 */
const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';

export function newTaskId(nowMs: number = Date.now()): string {
  let time = '';
  let t = nowMs;
  for (let i = 0; i < 10; i++) {
    time = ALPHABET[t % 32]! + time;
    t = Math.floor(t / 32);
  }
  const bytes = randomBytes(10);
  let rand = '';
  let acc = 0;
  let bits = 0;
  for (const byte of bytes) {
    acc = (acc << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      rand += ALPHABET[(acc >> bits) & 31]!;
    }
    acc &= (1 << bits) - 1;
  }
  return time + rand;
}

export const TASK_ID_PATTERN = /^[0-9a-hjkmnp-tv-z]{26}$/;

export function isTaskId(value: string): boolean {
  return TASK_ID_PATTERN.test(value);
}
