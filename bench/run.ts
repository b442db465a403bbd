import { benchApi } from './api.js';
import { benchSlurm } from './slurm.js';
import { benchData } from './data.js';
import { benchLifecycle } from './lifecycle.js';
import { benchSoak } from './soak.js';
import { benchRunAsUser } from './run-as-user.js';
import { benchScale } from './scale.js';
import { printTable, type Row } from './table.js';

/**
 * `npm run bench`: measures the gateway against real Redis, real HTTP and the real single-node Slurm
 * and prints one table. Sections can be chosen: `npm run bench -- api slurm`; `soak` (twenty minutes of
 * steady load against a short retention) runs only when named.
 */
const SECTIONS: Record<string, (rows: Row[]) => Promise<void>> = {
  api: benchApi,
  slurm: benchSlurm,
  data: benchData,
  lifecycle: benchLifecycle,
  'run-as-user': benchRunAsUser,
  scale: benchScale,
  soak: benchSoak,
};

async function main(): Promise<void> {
  const wanted = process.argv.slice(2).filter((a) => a in SECTIONS);
  const rows: Row[] = [];
  // The soak runs for twenty minutes: only when asked for by name.
  const all = Object.keys(SECTIONS).filter((name) => name !== 'soak');
  for (const name of wanted.length > 0 ? wanted : all) {
    process.stderr.write(`bench: ${name}...\n`);
    try {
      await SECTIONS[name]!(rows);
    } catch (err) {
      rows.push({ section: name, metric: 'failed', value: (err as Error).message });
    }
  }
  printTable(rows);
  process.exit(0);
}

void main();
