import { createHash } from 'node:crypto';
import { toImageRef } from './images.js';

/** How an image is named in the cache: one canonical reference per image, one file name per reference. */

const DOCKER_HUB_HOSTS = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io']);

/**
 * The reference an image is pulled and cached by. Docker references that name the same image are
 * made equal (`alpine`, `docker://alpine`, `docker.io/library/alpine` and `docker://alpine:latest`
 * all become `docker://alpine:latest`), so they share one file; other schemes stay as given.
 */
export function toCanonicalRef(image: string): string {
  const ref = toImageRef(image);
  if (!ref.startsWith('docker://')) return ref;
  const rest = ref.slice('docker://'.length);
  const at = rest.indexOf('@');
  const digest = at >= 0 ? rest.slice(at) : '';
  let name = at >= 0 ? rest.slice(0, at) : rest;
  // a colon before the last slash is a registry port, not a tag
  const colon = name.indexOf(':', name.lastIndexOf('/') + 1);
  let tag = '';
  if (colon >= 0) {
    tag = name.slice(colon);
    name = name.slice(0, colon);
  }
  const parts = name.split('/');
  if (parts.length > 1 && DOCKER_HUB_HOSTS.has(parts[0] ?? '')) parts.shift();
  if (parts.length > 1 && parts[0] === 'library') parts.shift();
  if (!tag && !digest) tag = ':latest';
  return `docker://${parts.join('/')}${tag}${digest}`;
}

/** Why `ref` cannot be a reference at all, or undefined. The registry judges the rest. */
export function checkReference(ref: string): string | undefined {
  const rest = ref.slice(ref.indexOf('://') + 3);
  if (!rest || rest.startsWith(':') || rest.startsWith('@')) return 'invalid image reference: no name';
  if (/[\s\x00-\x1f\x7f]/.test(rest)) return 'invalid image reference: it contains white space';
  return undefined;
}

/** `docker://alpine:latest` -> `docker_alpine_latest-<12 hex>.sif`: readable, and unique by the hash. */
export function cacheFileName(ref: string): string {
  const hash = createHash('sha256').update(ref).digest('hex').slice(0, 12);
  const readable = ref
    .replace('://', '_')
    .replace(/[^A-Za-z0-9._-]/g, '_')
    .slice(0, 120);
  return `${readable}-${hash}.sif`;
}
