/**
 * Asks `probe` every 100 ms until it returns something other than undefined, and returns that; after
 * `timeoutMs`, fails naming `what` and the probe's last error. For servers the tests start
 * themselves, which come up (or change roles) in their own time.
 */
export async function until<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | undefined>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(
    `${what} did not happen in ${timeoutMs} ms${last instanceof Error ? `: ${last.message}` : ''}`,
  );
}
