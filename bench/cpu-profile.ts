import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';

/** One function's share of a profile: where it is, and the time sampled in its own code. */
export interface SelfTime {
  where: string;
  ms: number;
}

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface Profile {
  nodes: ProfileNode[];
  samples?: number[];
  timeDeltas?: number[];
}

/**
 * Samples this process's main thread (the gateway's event loop, when it runs in the bench) with
 * V8's profiler, every `intervalUs`, until the returned function is called: that writes the profile
 * to `file` (open it in Chrome's DevTools, Performance panel) and returns the functions with the most
 * time in their own code, busiest first.
 */
export async function startCpuProfile(
  intervalUs = 200,
): Promise<(file: string, top?: number) => Promise<SelfTime[]>> {
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: intervalUs });
  await session.post('Profiler.start');
  return async (file, top = 10) => {
    const { profile } = (await session.post('Profiler.stop')) as { profile: Profile };
    session.disconnect();
    writeFileSync(file, JSON.stringify(profile));
    return selfTimes(profile).slice(0, top);
  };
}

/** Each function's own sampled time (ms), summed over its call sites, busiest first. */
export function selfTimes(profile: Profile): SelfTime[] {
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const ms = new Map<string, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) {
    // A sample's time is the gap to the next one.
    const us = deltas[i + 1] ?? 0;
    const frame = nodes.get(samples[i]!)?.callFrame;
    if (!frame) continue;
    const file = frame.url.replace(/^file:\/\//, '').replace(`${process.cwd()}/`, '');
    const where =
      `${frame.functionName || '(anonymous)'} ${file ? `${file}:${frame.lineNumber + 1}` : ''}`.trim();
    ms.set(where, (ms.get(where) ?? 0) + us / 1000);
  }
  return [...ms].map(([where, t]) => ({ where, ms: t })).sort((a, b) => b.ms - a.ms);
}
