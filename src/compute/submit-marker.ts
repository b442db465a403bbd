/**
 * The submit marker (`submit-attempted`, tes/task-directory.ts), written whole just before each
 * attempt's sbatch: everything in it is that attempt's. Its lines:
 *
 *     <the attempt's time, ISO 8601>
 *     note <a note of the preparation, for the task's logs>   zero or more, written with the marker
 *     array <array job name> <index>                          when the Slurm driver submits the task
 *                                                             in an array: written with the rest
 *
 * A worker that finds the marker and no job in Redis looks for the job the attempt may have made: the
 * element of the array its `array` line names, else the job with the task's own name. Every note has
 * its prefix, so no note can pass for an `array` line. Lines of no known shape after the first are
 * notes as gateways wrote them before notes had a prefix.
 */

export interface SubmitMarker {
  notes: string[];
  /** The array the attempt's task went in, and its index there. */
  array?: { name: string; index: number } | undefined;
}

const NOTE = 'note ';
const ARRAY = 'array ';
const ARRAY_LINE = /^array (\S+) (\d+)$/;

/** The marker of an attempt made at `at`: its time, then the notes, one line each. */
export function renderSubmitMarker(at: Date, notes: readonly string[]): string {
  // A line break in a note would split it in two.
  return [`${at.toISOString()}\n`, ...notes.map((n) => `${NOTE}${n.replace(/[\r\n]+/g, ' ')}\n`)].join('');
}

/** The line the Slurm driver writes with the marker when the task is element `index` of array `name`. */
export function renderArrayLine(name: string, index: number): string {
  return `${ARRAY}${name} ${index}\n`;
}

export function parseSubmitMarker(text: string): SubmitMarker {
  const marker: SubmitMarker = { notes: [] };
  text.split('\n').forEach((line, i) => {
    const array = ARRAY_LINE.exec(line);
    if (array) marker.array = { name: array[1]!, index: Number(array[2]) };
    else if (line.startsWith(NOTE)) marker.notes.push(line.slice(NOTE.length));
    else if (i > 0 && line !== '' && !line.startsWith(ARRAY)) marker.notes.push(line);
  });
  return marker;
}

/** The marker without its `array` lines: the array was refused, so it names no job to look for. */
export function withoutArray(text: string): string {
  return text
    .split('\n')
    .filter((line) => !line.startsWith(ARRAY))
    .join('\n');
}
