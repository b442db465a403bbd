import { randomBytes } from 'node:crypto';
import {
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join, relative } from 'node:path';

/**
 * Canaries for the hostile-task suite: host files that a task must never change, move or read. Each
 * one is a small tree outside every root the gateway serves (work root, allowed roots, image cache):
 *
 *   <dir>/secret.txt          the canary file
 *   <dir>/tree/secret.txt     the canary directory, with two files a wildcard `*.txt` matches
 *   <dir>/tree/other.txt
 *   <dir>/absent              never exists; a link to it is a dangling link that must stay dangling
 *
 * Every file holds a secret that starts with the suite's marker, so a leak of any canary into
 * anything a client sees is one substring search. Times are set far in the past, so a rewrite with
 * the very same bytes still shows.
 */
export interface Canary {
  dir: string;
  file: string;
  tree: string;
  absent: string;
  secret: string;
}

const OLD_TIME = new Date('2001-02-03T04:05:06Z');

/** The marker every secret of one suite run starts with. */
export function newMarker(): string {
  return `SECRET-${randomBytes(6).toString('hex')}`;
}

export function plantCanary(parent: string, name: string, marker: string): Canary {
  const dir = join(parent, name);
  const tree = join(dir, 'tree');
  const secret = `${marker}-${name}`;
  mkdirSync(tree, { recursive: true });
  const file = join(dir, 'secret.txt');
  for (const [path, text] of [
    [file, `${secret}\n`],
    [join(tree, 'secret.txt'), `${secret} in the tree\n`],
    [join(tree, 'other.txt'), `${secret} other\n`],
  ] as const) {
    writeFileSync(path, text, { mode: 0o600 });
    utimesSync(path, OLD_TIME, OLD_TIME);
  }
  utimesSync(tree, OLD_TIME, OLD_TIME);
  utimesSync(dir, OLD_TIME, OLD_TIME);
  return { dir, file, tree, absent: join(dir, 'absent'), secret };
}

/** What a path was: its kind, identity, size, times and content, keyed by its path under the root. */
export interface EntryState {
  kind: 'file' | 'dir' | 'link' | 'other';
  ino: bigint;
  size: bigint;
  mtimeNs: bigint;
  mode: number;
  content?: string;
}
export type Snapshot = Map<string, EntryState>;

/** Everything under `root` (itself included), links not followed. */
export function snapshot(root: string): Snapshot {
  const out: Snapshot = new Map();
  const visit = (path: string): void => {
    const st = lstatSync(path, { bigint: true, throwIfNoEntry: false });
    if (!st) return;
    const kind = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'link' : 'other';
    const entry: EntryState = {
      kind,
      ino: st.ino,
      size: st.size,
      mtimeNs: st.mtimeNs,
      mode: Number(st.mode),
    };
    if (kind === 'file') entry.content = readFileSync(path, 'utf8');
    if (kind === 'link') entry.content = readlinkSync(path);
    out.set(relative(root, path) || '.', entry);
    if (kind === 'dir') for (const name of readdirSync(path).sort()) visit(join(path, name));
  };
  visit(root);
  return out;
}

/** One readable line per difference between two snapshots of `root`; empty when nothing changed. */
export function changesSince(root: string, before: Snapshot, after: Snapshot = snapshot(root)): string[] {
  const problems: string[] = [];
  const at = (key: string): string => (key === '.' ? root : join(root, key));
  for (const [key, was] of before) {
    const now = after.get(key);
    if (!now) {
      problems.push(`${at(key)} is gone (moved or deleted)`);
      continue;
    }
    if (now.kind !== was.kind) problems.push(`${at(key)} was a ${was.kind}, is now a ${now.kind}`);
    else if (now.ino !== was.ino)
      problems.push(`${at(key)} was replaced (inode ${was.ino} is now ${now.ino})`);
    if (now.content !== was.content) {
      problems.push(`${at(key)} changed: was ${show(was.content)}, now ${show(now.content)}`);
    } else if (now.size !== was.size) problems.push(`${at(key)} changed size: ${was.size} -> ${now.size}`);
    if (now.mtimeNs !== was.mtimeNs) problems.push(`${at(key)} was modified (mtime changed)`);
    if (now.mode !== was.mode)
      problems.push(`${at(key)} changed mode: ${octal(was.mode)} -> ${octal(now.mode)}`);
  }
  for (const key of after.keys()) {
    if (!before.has(key)) problems.push(`${at(key)} appeared (${after.get(key)!.kind})`);
  }
  return problems;
}

/** Regular files under `root` (links not followed) whose content holds `needle`. */
export function filesContaining(root: string, needle: string, maxBytes = 4 * 1024 * 1024): string[] {
  const found: string[] = [];
  const visit = (path: string): void => {
    const st = lstatSync(path, { throwIfNoEntry: false });
    if (!st) return;
    if (st.isDirectory()) {
      for (const name of readdirSync(path)) visit(join(path, name));
    } else if (st.isFile() && st.size <= maxBytes && readFileSync(path, 'latin1').includes(needle)) {
      found.push(path);
    }
  };
  visit(root);
  return found;
}

/** Symbolic links under `root` (a delivered output must be a copy, never a link to a host file). */
export function linksUnder(root: string): string[] {
  const found: string[] = [];
  const visit = (path: string): void => {
    const st = lstatSync(path, { throwIfNoEntry: false });
    if (st?.isSymbolicLink()) found.push(`${path} -> ${readlinkSync(path)}`);
    else if (st?.isDirectory()) for (const name of readdirSync(path)) visit(join(path, name));
  };
  visit(root);
  return found;
}

function show(text: string | undefined): string {
  if (text === undefined) return '(nothing)';
  return JSON.stringify(text.length > 120 ? `${text.slice(0, 120)}…` : text);
}

function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}
