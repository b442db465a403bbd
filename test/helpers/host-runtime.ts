import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ContainerPlan } from '../../src/apptainer/container-plan.js';

/**
 * A runtime stand-in for running rendered job scripts without containers: it drops `exec`, the
 * options (`--mount` and `--pwd` take a value) and the image, and runs the command on the host, so
 * tests name host paths in commands. Written into `dir`; returns its path.
 */
export function writeHostRuntime(dir: string): string {
  const path = join(dir, 'runtime');
  writeFileSync(
    path,
    '#!/bin/bash\nshift\nwhile [[ $1 == --* ]]; do case $1 in --mount | --pwd) shift 2 ;; *) shift ;; esac; done\nshift\nexec "$@"\n',
  );
  chmodSync(path, 0o755);
  return path;
}

/** Creates a plan's folders and mount-point files plainly (the tests that use it plant links later). */
export function layOut(plan: ContainerPlan): void {
  for (const entry of plan.layout) {
    if (entry.kind === 'dir') mkdirSync(entry.path, { recursive: true });
    else writeFileSync(entry.path, '');
  }
}
