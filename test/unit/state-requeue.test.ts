import { canTransition, legalSources, TES_STATES, type TesState } from '../../src/tes/state.js';

/** The one move back: a task whose started job Slurm put back in its queue waits again. */
describe('the requeue path of the TES state machine', () => {
  const REQUEUES: Array<[TesState, TesState]> = [
    ['INITIALIZING', 'QUEUED'],
    ['RUNNING', 'QUEUED'],
  ];
  const isRequeue = (from: TesState, to: TesState) => REQUEUES.some(([f, t]) => f === from && t === to);
  const others = TES_STATES.flatMap((from) =>
    TES_STATES.filter((to) => !isRequeue(from, to)).map((to): [TesState, TesState] => [from, to]),
  );

  it.each(REQUEUES)('allows %s -> %s as a requeue', (from, to) => {
    expect(canTransition(from, to, 'requeue')).toBe(true);
  });

  it.each(REQUEUES)('refuses %s -> %s as an ordinary change', (from, to) => {
    expect(canTransition(from, to)).toBe(false);
    expect(canTransition(from, to, 'forward')).toBe(false);
  });

  it('allows nothing else as a requeue, not even a forward change', () => {
    for (const [from, to] of others) expect(canTransition(from, to, 'requeue')).toBe(false);
  });

  it('reaches QUEUED only from a started task, and only as a requeue', () => {
    expect(legalSources('QUEUED', 'requeue')).toEqual(['INITIALIZING', 'RUNNING']);
    expect(legalSources('QUEUED')).toEqual([]);
  });
});
