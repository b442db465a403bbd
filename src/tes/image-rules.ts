import { posix } from 'node:path';

/** Which images tasks may use (config `container.imageRoots` and `container.allowedImageSchemes`). */
export interface ImagePolicy {
  /** Directories whose image files tasks may run; empty: none. */
  imageRoots: readonly string[];
  /** URI schemes, without `://`. */
  allowedSchemes: readonly string[];
}

const SCHEME = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//;

/**
 * The characters of a docker reference (`registry:port/name/path:tag@sha256:hex`). The registry
 * judges the rest; a `:/` is refused because it is how a local transport (`docker-archive:/x.tar`)
 * would try to pass as a registry host.
 */
const BARE_REFERENCE = /^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$/;

export function toImageRef(image: string): string {
  if (image.startsWith('/') || SCHEME.test(image)) return image;
  return `docker://${image}`;
}

/** The URI scheme an image names (`docker` for a bare reference), or undefined for a local file. */
export function imageScheme(image: string): string | undefined {
  if (image.startsWith('/')) return undefined;
  return SCHEME.exec(image)?.[1] ?? 'docker';
}

/** Is `path` (normalized, absolute) one of `roots` or inside one? */
export function isUnder(path: string, roots: readonly string[]): boolean {
  return roots.some((root) => {
    const r = posix.normalize(root).replace(/(.)\/+$/, '$1');
    return path === r || path.startsWith(r === '/' ? '/' : `${r}/`);
  });
}

/**
 * Why an image is not one this gateway runs, or undefined. Pure and lexical: the API checks it at
 * creation; the image cache checks it again, with symbolic links resolved, before the job is made.
 */
export function checkImage(image: string, policy: ImagePolicy): string | undefined {
  if (image.startsWith('/')) {
    if (image.split('/').includes('..')) return "must not contain '..'";
    if (policy.imageRoots.length === 0) {
      return 'is a local image file; this gateway runs none (container.imageRoots is empty)';
    }
    if (!isUnder(posix.normalize(image), policy.imageRoots)) {
      return `is a local image file outside the image roots (${policy.imageRoots.join(', ')})`;
    }
    return undefined;
  }
  const scheme = SCHEME.exec(image)?.[1];
  if (scheme !== undefined) {
    if (policy.allowedSchemes.includes(scheme)) {
      const rest = image.slice(scheme.length + 3);
      if (rest === '' || /[\s\x00-\x1f\x7f]/.test(rest)) {
        return 'is not an image reference: nothing, or white space, after the scheme';
      }
      return undefined;
    }
    return (
      `uses ${scheme}://, which this gateway does not accept (accepted: ` +
      `${policy.allowedSchemes.map((s) => `${s}://`).join(', ')}` +
      `${policy.allowedSchemes.includes('docker') ? ', or a docker reference such as ubuntu:24.04' : ''})`
    );
  }
  if (!BARE_REFERENCE.test(image) || image.includes(':/')) {
    return 'is neither an image reference (such as ubuntu:24.04 or quay.io/org/tool:1.0) nor an absolute path';
  }
  if (!policy.allowedSchemes.includes('docker')) {
    return 'is a docker reference, and this gateway does not accept docker:// images';
  }
  return undefined;
}
