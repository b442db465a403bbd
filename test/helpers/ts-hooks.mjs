// Module hooks that let a plain `node` child process run the TypeScript sources directly, the way
// jest sees them: `.js` specifiers inside a `.ts` file name the `.ts` file next to it, and each
// `.ts` file is transpiled on load (types stripped, nothing checked: `npm run typecheck` does that).
// Registered by ts-register.mjs; used by gateway-process.ts to run the gateway in its own process.
//
// Transpiling the whole gateway costs seconds of CPU per process, and tests start many processes on
// a busy machine, so each output is kept in node_modules/.cache, named by a hash of its source, of the
// compiler's version and of these hooks (which hold the options): a changed file, another compiler or
// other options miss the cache.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CACHE = join(ROOT, 'node_modules', '.cache', 'ts-hooks');
const TS_VERSION = JSON.parse(
  readFileSync(join(ROOT, 'node_modules', 'typescript', 'package.json'), 'utf8'),
).version;
const HOOKS = readFileSync(fileURLToPath(import.meta.url), 'utf8');

/** The compiler, loaded on the first cache miss only. */
let compiler;

export async function resolve(specifier, context, nextResolve) {
  const parent = context.parentURL;
  if (parent?.endsWith('.ts') && /^\.{1,2}\//.test(specifier) && specifier.endsWith('.js')) {
    const candidate = new URL(`${specifier.slice(0, -3)}.ts`, parent);
    if (existsSync(fileURLToPath(candidate))) return { url: candidate.href, shortCircuit: true };
  }
  return nextResolve(specifier, context);
}

export async function load(url, context, nextLoad) {
  if (!url.startsWith('file:') || !url.endsWith('.ts')) return nextLoad(url, context);
  const fileName = fileURLToPath(url);
  const source = readFileSync(fileName, 'utf8');
  const key = createHash('sha256')
    .update(JSON.stringify([TS_VERSION, HOOKS, fileName]))
    .update(source)
    .digest('hex');
  const cached = join(CACHE, `${key}.js`);
  if (existsSync(cached))
    return { format: 'module', source: readFileSync(cached, 'utf8'), shortCircuit: true };
  compiler ??= (await import('typescript')).default;
  const { outputText } = compiler.transpileModule(source, {
    fileName,
    compilerOptions: {
      module: compiler.ModuleKind.ESNext,
      target: compiler.ScriptTarget.ES2022,
      inlineSourceMap: true,
      inlineSources: true,
    },
  });
  // Written aside and renamed into place: processes starting together never read half a file. A
  // process that may not write there (a gateway run as a service account) goes on without it.
  try {
    mkdirSync(CACHE, { recursive: true });
    const partial = `${cached}.${process.pid}.tmp`;
    writeFileSync(partial, outputText);
    renameSync(partial, cached);
  } catch {
    // Only the next start is slower.
  }
  return { format: 'module', source: outputText, shortCircuit: true };
}
