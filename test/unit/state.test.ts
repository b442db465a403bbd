import { isPermanent } from '../../src/errors.js';
import {
  canTransition,
  IllegalTransitionError,
  isTerminal,
  legalSources,
  sourcesFor,
  TES_STATES,
  TERMINAL_STATES,
  type TesState,
} from '../../src/tes/state.js';

const LEGAL: Array<[TesState, TesState]> = [
  ['QUEUED', 'INITIALIZING'],
  ['QUEUED', 'RUNNING'],
  ['QUEUED', 'COMPLETE'],
  ['QUEUED', 'EXECUTOR_ERROR'],
  ['QUEUED', 'SYSTEM_ERROR'],
  ['QUEUED', 'PREEMPTED'],
  ['QUEUED', 'CANCELING'],
  ['QUEUED', 'CANCELED'],
  ['INITIALIZING', 'RUNNING'],
  ['INITIALIZING', 'COMPLETE'],
  ['INITIALIZING', 'EXECUTOR_ERROR'],
  ['INITIALIZING', 'SYSTEM_ERROR'],
  ['INITIALIZING', 'PREEMPTED'],
  ['INITIALIZING', 'CANCELING'],
  ['INITIALIZING', 'CANCELED'],
  ['RUNNING', 'COMPLETE'],
  ['RUNNING', 'EXECUTOR_ERROR'],
  ['RUNNING', 'SYSTEM_ERROR'],
  ['RUNNING', 'PREEMPTED'],
  ['RUNNING', 'CANCELING'],
  ['CANCELING', 'CANCELED'],
  ['CANCELING', 'SYSTEM_ERROR'],
];

const key = (from: TesState, to: TesState): string => `${from}->${to}`;
const legalKeys = new Set(LEGAL.map(([f, t]) => key(f, t)));
const ILLEGAL: Array<[TesState, TesState]> = TES_STATES.flatMap((from) =>
  TES_STATES.filter((to) => !legalKeys.has(key(from, to))).map((to): [TesState, TesState] => [from, to]),
);

describe('the TES state machine', () => {
  it.each(LEGAL)('allows %s -> %s', (from, to) => {
    expect(canTransition(from, to)).toBe(true);
  });

  it.each(ILLEGAL)('refuses %s -> %s', (from, to) => {
    expect(canTransition(from, to)).toBe(false);
  });

  it('never moves a task backwards through QUEUED, INITIALIZING and RUNNING', () => {
    const order: TesState[] = ['QUEUED', 'INITIALIZING', 'RUNNING'];
    order.forEach((from, i) => {
      for (const to of order.slice(0, i)) expect(canTransition(from, to)).toBe(false);
    });
    expect(legalSources('QUEUED')).toEqual([]);
    expect(legalSources('INITIALIZING')).toEqual(['QUEUED']);
  });

  it('never lets a terminal state change', () => {
    for (const from of TERMINAL_STATES) {
      expect(isTerminal(from)).toBe(true);
      for (const to of TES_STATES) expect(canTransition(from, to)).toBe(false);
    }
  });
});

describe('sourcesFor', () => {
  it('gives the legal sources when the caller names none', () => {
    expect(sourcesFor('t', 'CANCELED', undefined)).toEqual(legalSources('CANCELED'));
    expect(sourcesFor('t', 'QUEUED', undefined, 'requeue')).toEqual(['INITIALIZING', 'RUNNING']);
  });

  it('lets a caller narrow the legal sources, and name the target itself to keep the state', () => {
    expect(sourcesFor('t', 'CANCELED', ['QUEUED', 'INITIALIZING'])).toEqual(['QUEUED', 'INITIALIZING']);
    expect(sourcesFor('t', 'QUEUED', ['QUEUED'])).toEqual([]);
    expect(sourcesFor('t', 'QUEUED', ['RUNNING'], 'requeue')).toEqual(['RUNNING']);
  });

  it.each([
    ['CANCELED', ['QUEUED', 'RUNNING'], 'forward', 'RUNNING'],
    ['COMPLETE', ['CANCELING'], 'forward', 'CANCELING'],
    ['RUNNING', ['COMPLETE'], 'forward', 'COMPLETE'],
    ['QUEUED', ['RUNNING'], 'forward', 'RUNNING'],
    ['QUEUED', ['CANCELING'], 'requeue', 'CANCELING'],
  ] as const)(
    'refuses a change to %s from %j on the %s path, naming %s, as a permanent error',
    (to, from, path, wrong) => {
      let thrown: unknown;
      try {
        sourcesFor('task-1', to, from, path);
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toBeInstanceOf(IllegalTransitionError);
      expect(thrown).toMatchObject({ taskId: 'task-1', from: wrong, to, path });
      expect((thrown as Error).message).toContain(`task task-1 cannot move from ${wrong} to ${to}`);
      expect(isPermanent(thrown)).toBe(true);
    },
  );
});
