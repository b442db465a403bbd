/**
 * Elements from data. Every string becomes a text node or an attribute value, never markup: task
 * names, tags, commands and logs are whatever a client sent or a program printed.
 */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') element.className = String(value);
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  element.append(...children.flat(Infinity).filter((c) => c !== undefined && c !== null && c !== false));
  return element;
}

/** `2026-11-30 23:50:15 UTC` in a <time>, or an em dash for no time. */
export function timeOf(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  return h('time', { datetime: date.toISOString() }, formatTime(date));
}

export function formatTime(date) {
  return `${date.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

/**
 * `under 1 s`, `42 s`, `3 min 5 s`, `2 h 7 min`, `3 d 4 h`. Times come from the job script (to the
 * millisecond) and from Slurm (to the second), so a short span may even come out a little negative.
 */
export function formatDuration(ms) {
  if (!Number.isFinite(ms)) return '—';
  if (ms < 1000) return 'under 1 s';
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const hours = Math.floor(m / 60);
  if (hours < 24) return `${hours} h ${m % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/** Time between two ISO times; up to now when the end is not there yet. */
export function durationBetween(startIso, endIso, now = Date.now()) {
  if (!startIso) return undefined;
  const start = Date.parse(startIso);
  const end = endIso ? Date.parse(endIso) : now;
  return Number.isNaN(start) || Number.isNaN(end) ? undefined : end - start;
}

export function formatBytes(bytes) {
  const n = Number(bytes);
  if (!Number.isFinite(n) || n < 0) return String(bytes);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

/** A command as one would type it in a shell: words that need it in single quotes. */
export function formatCommand(words) {
  return (words ?? [])
    .map((word) => (/^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`))
    .join(' ');
}

/**
 * Replaces `current` by `next` unless both render the same, so that what did not change keeps its
 * focus, selection and scroll position across refreshes. Returns the element now in the page.
 */
export function swap(current, next) {
  if (current.isEqualNode(next)) return current;
  current.replaceWith(next);
  return next;
}

/**
 * Makes `parent`'s children the `wanted` ones in order, moving only those out of place: elements
 * already there in the right position stay untouched.
 */
export function reconcileChildren(parent, wanted) {
  wanted.forEach((child, i) => {
    const present = parent.children[i];
    if (present !== child) parent.insertBefore(child, present ?? null);
  });
  while (parent.children.length > wanted.length) parent.lastElementChild.remove();
}
