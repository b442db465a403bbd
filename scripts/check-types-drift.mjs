// Fails when src/api/generated/tes.ts is not what openapi-typescript makes of spec/tes.openapi.yaml.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const out = join(mkdtempSync(join(tmpdir(), 'tes-types-')), 'tes.ts');
execFileSync('npx', ['openapi-typescript', 'spec/tes.openapi.yaml', '-o', out], { stdio: 'pipe' });
execFileSync('npx', ['prettier', '--config', '.prettierrc.json', '--write', out], { stdio: 'pipe' });
const fresh = readFileSync(out, 'utf8');
const committed = readFileSync('src/api/generated/tes.ts', 'utf8');
if (fresh !== committed) {
  console.error(
    'src/api/generated/tes.ts is out of date with spec/tes.openapi.yaml: run npm run gen:types and commit',
  );
  process.exit(1);
}
console.log('generated types match the spec');
