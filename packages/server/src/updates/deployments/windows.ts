import { RampartError } from '../../errors.js';

/**
 * Maintenance windows: when a deployment may hand devices new work. The format is deliberately
 * small: `DAYS HH:MM-HH:MM ZONE`, several windows separated by `;`.
 *
 * - DAYS: `daily`, a day (`Mon`), a range (`Mon-Fri`, `Fri-Mon` wraps), or a comma list of those.
 * - HH:MM-HH:MM: local start and end; an end at or before the start runs past midnight, and belongs
 *   to the day it starts on (`Fri 22:00-02:00` is open from Friday 22:00 to Saturday 02:00).
 * - ZONE: an IANA time zone (`Europe/Berlin`) or `UTC`.
 *
 * Example: `Mon-Fri 01:00-05:00 Europe/Berlin; Sat,Sun 00:00-08:00 Europe/Berlin`.
 */
export interface MaintenanceWindow {
  /** Days the window starts on, 0 = Sunday … 6 = Saturday. */
  days: ReadonlySet<number>;
  /** Minutes after local midnight. */
  start: number;
  end: number;
  zone: string;
}

const DAY_NAMES = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];

function bad(text: string, why: string): RampartError {
  const message = `window "${text}" ${why}; expected DAYS HH:MM-HH:MM ZONE, e.g. "Mon-Fri 01:00-05:00 Europe/Berlin"`;
  return new RampartError('VALIDATION', message, [{ field: 'window', message }]);
}

function dayOf(name: string, text: string): number {
  const i = DAY_NAMES.indexOf(name.toLowerCase().slice(0, 3));
  if (i < 0 || name.length < 3) throw bad(text, `has an unknown day "${name}"`);
  return i;
}

function parseDays(spec: string, text: string): Set<number> {
  if (spec.toLowerCase() === 'daily' || spec === '*') return new Set([0, 1, 2, 3, 4, 5, 6]);
  const days = new Set<number>();
  for (const part of spec.split(',')) {
    const [a, b, ...rest] = part.split('-');
    if (rest.length || !a) throw bad(text, `has a bad day list "${spec}"`);
    const from = dayOf(a, text);
    const to = b === undefined ? from : dayOf(b, text);
    for (let d = from; ; d = (d + 1) % 7) {
      days.add(d);
      if (d === to) break;
    }
  }
  return days;
}

function parseTime(t: string, text: string): number {
  const m = /^([01]?[0-9]|2[0-4]):([0-5][0-9])$/.exec(t);
  if (!m) throw bad(text, `has a bad time "${t}"`);
  const minutes = Number(m[1]) * 60 + Number(m[2]);
  if (minutes > 24 * 60) throw bad(text, `has a bad time "${t}"`);
  return minutes;
}

function checkZone(zone: string, text: string): string {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
  } catch {
    throw bad(text, `has an unknown time zone "${zone}"`);
  }
  return zone;
}

/** Parse a window specification; throws a VALIDATION error naming the field `window`. */
export function parseWindows(text: string): MaintenanceWindow[] {
  const parts = text
    .split(';')
    .map((p) => p.trim())
    .filter((p) => p.length > 0);
  if (!parts.length) throw bad(text, 'is empty');
  return parts.map((part) => {
    const fields = part.split(/\s+/);
    if (fields.length !== 3) throw bad(part, 'does not have three fields');
    const [days, range, zone] = fields as [string, string, string];
    const [from, to, ...rest] = range.split('-');
    if (rest.length || from === undefined || to === undefined)
      throw bad(part, `has a bad time range "${range}"`);
    return {
      days: parseDays(days, part),
      start: parseTime(from, part),
      end: parseTime(to, part),
      zone: checkZone(zone, part),
    };
  });
}

const formatters = new Map<string, Intl.DateTimeFormat>();

/** Local weekday (0 = Sunday) and minutes after midnight of `at` in `zone`. */
export function localTime(at: Date, zone: string): { day: number; minutes: number } {
  let f = formatters.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', {
      timeZone: zone,
      weekday: 'short',
      hour: '2-digit',
      minute: '2-digit',
      hourCycle: 'h23',
    });
    formatters.set(zone, f);
  }
  const parts = f.formatToParts(at);
  const get = (type: string) => parts.find((p) => p.type === type)?.value ?? '';
  return { day: dayOf(get('weekday'), zone), minutes: Number(get('hour')) * 60 + Number(get('minute')) };
}

/** Whether any window is open at `at`. */
export function isWindowOpen(windows: readonly MaintenanceWindow[], at: Date): boolean {
  return windows.some((w) => {
    const { day, minutes } = localTime(at, w.zone);
    if (w.start < w.end) return w.days.has(day) && minutes >= w.start && minutes < w.end;
    // Past midnight: the late part belongs to today's window, the early part to yesterday's.
    if (minutes >= w.start) return w.days.has(day);
    return minutes < w.end && w.days.has((day + 6) % 7);
  });
}
