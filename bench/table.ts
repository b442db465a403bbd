/** The benchmark's output: one table, rows added as measurements finish. */
export interface Row {
  section: string;
  metric: string;
  value: string;
  goal?: string;
  verdict?: 'met' | 'missed' | '';
}

export function printTable(rows: readonly Row[]): void {
  const head = ['section', 'metric', 'value', 'goal', ''];
  const cells = rows.map((r) => [r.section, r.metric, r.value, r.goal ?? '', r.verdict ?? '']);
  const widths = head.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]): string => `| ${c.map((x, i) => x.padEnd(widths[i]!)).join(' | ')} |`;
  console.log(line(head));
  console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  for (const c of cells) console.log(line(c));
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}
