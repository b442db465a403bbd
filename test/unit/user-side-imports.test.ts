import { readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';

/**
 * The user side of run-as-user mode runs as a task's owner, once per finished task: it must load
 * nothing of the gateway's configuration, Redis, BullMQ, Express or the API. This follows what its
 * modules import at run time (each compiled as the build compiles it, so type-only imports are gone)
 * from src/run-as/user-side.ts down.
 */

const ENTRY = join(process.cwd(), 'src', 'run-as', 'user-side.ts');

const FORBIDDEN_PACKAGES = [
  'bullmq',
  'ioredis',
  'express',
  'express-openapi-validator',
  'pino',
  'yaml',
  'zod',
];
const FORBIDDEN_FOLDERS = [
  'src/config',
  'src/queue',
  'src/store',
  'src/api',
  'src/compute',
  'src/reconciler',
];

/** Every module the entry loads at run time: project files (relative to the root) and packages. */
function runtimeImports(entry: string): { files: string[]; packages: string[] } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const pending = [entry];
  for (let file = pending.pop(); file; file = pending.pop()) {
    const rel = relative(process.cwd(), file);
    if (files.has(rel)) continue;
    files.add(rel);
    const js = ts.transpileModule(readFileSync(file, 'utf8'), {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    }).outputText;
    const specifiers = [
      ...js.matchAll(/^\s*(?:import|export)\b[^'"]*?\bfrom\s*['"]([^'"]+)['"]/gm),
      ...js.matchAll(/^\s*import\s*['"]([^'"]+)['"]/gm),
      ...js.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g),
    ].map((m) => m[1]!);
    for (const s of specifiers) {
      if (s.startsWith('.')) pending.push(resolve(dirname(file), s.replace(/\.js$/, '.ts')));
      else if (!s.startsWith('node:'))
        packages.add(s.startsWith('@') ? s.split('/').slice(0, 2).join('/') : s.split('/')[0]!);
    }
  }
  return { files: [...files].sort(), packages: [...packages].sort() };
}

it('loads none of the gateway service: no configuration, Redis, BullMQ, Express', () => {
  const { files, packages } = runtimeImports(ENTRY);
  // The walk saw what it must: the framing, delivery and the task directory's names.
  expect(files).toEqual(
    expect.arrayContaining([
      'src/run-as/user-side.ts',
      'src/run-as/frames.ts',
      'src/staging/deliver-outputs.ts',
      'src/tes/task-directory.ts',
    ]),
  );
  for (const pkg of FORBIDDEN_PACKAGES) expect(packages).not.toContain(pkg);
  for (const folder of FORBIDDEN_FOLDERS) expect(files.filter((f) => f.startsWith(`${folder}/`))).toEqual([]);
  // What it does load, so that a new dependency is a decision seen in review.
  expect(packages).toEqual(['p-limit']);
});
