import Table from 'cli-table3';
import { SingleBar, Presets } from 'cli-progress';
import pc from 'picocolors';

/** Options every command with output accepts. */
export interface OutputOptions {
  json?: boolean;
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

/** One JSON value on one line: for streams of events (`--json` on commands that keep running). */
export function printJsonLine(value: unknown): void {
  process.stdout.write(JSON.stringify(value) + '\n');
}

/** A table for people. Columns are [header, getter]; `null`/`undefined` render as "-". */
export function printTable<T>(
  rows: readonly T[],
  columns: [string, (row: T) => unknown][],
  empty = 'nothing to show',
): void {
  if (rows.length === 0) {
    process.stdout.write(pc.dim(empty) + '\n');
    return;
  }
  const table = new Table({
    head: columns.map(([h]) => h),
    style: { head: process.stdout.isTTY ? ['cyan'] : [], border: process.stdout.isTTY ? ['grey'] : [] },
    chars: {
      top: '',
      'top-mid': '',
      'top-left': '',
      'top-right': '',
      bottom: '',
      'bottom-mid': '',
      'bottom-left': '',
      'bottom-right': '',
      left: '',
      'left-mid': '',
      mid: '',
      'mid-mid': '',
      right: '',
      'right-mid': '',
      middle: '  ',
    },
  });
  for (const row of rows) {
    table.push(
      columns.map(([, get]) => {
        const v = get(row);
        return v === null || v === undefined || v === ''
          ? '-'
          : typeof v === 'object'
            ? JSON.stringify(v)
            : String(v);
      }),
    );
  }
  process.stdout.write(table.toString().replace(/^ +/gm, '') + '\n');
}

/** Print `value` as JSON when --json was given, otherwise let `human` render it. */
export function output<T>(opts: OutputOptions, value: T, human: (value: T) => void): void {
  if (opts.json) printJson(value);
  else human(value);
}

export interface Progress {
  increment(n?: number): void;
  setTotal(total: number): void;
  stop(): void;
}

/** A progress bar on standard error, shown only to people (a terminal, no --json). */
export function progress(label: string, total: number, opts: OutputOptions = {}): Progress {
  if (opts.json || !process.stderr.isTTY) {
    return { increment() {}, setTotal() {}, stop() {} };
  }
  const bar = new SingleBar(
    {
      format: `${label} [{bar}] {percentage}% | {value}/{total} | {eta_formatted} left`,
      stream: process.stderr,
      hideCursor: true,
      etaBuffer: 50,
    },
    Presets.shades_classic,
  );
  bar.start(total, 0);
  return {
    increment: (n = 1) => bar.increment(n),
    setTotal: (t) => bar.setTotal(t),
    stop: () => bar.stop(),
  };
}

/**
 * A running count on standard error for work of unknown size (following cursors), shown only to
 * people and only once the work turns out to be long (after `afterMs`).
 */
export function counter(label: string, opts: OutputOptions = {}, afterMs = 500): Progress {
  if (opts.json || !process.stderr.isTTY) return { increment() {}, setTotal() {}, stop() {} };
  const started = Date.now();
  let n = 0;
  let shown = false;
  return {
    increment: (by = 1) => {
      n += by;
      if (Date.now() - started < afterMs) return;
      shown = true;
      process.stderr.write(`\r${label}: ${n}`);
    },
    setTotal() {},
    stop: () => {
      if (shown) process.stderr.write('\n');
    },
  };
}

/** `2026-05-01T12:34:56.789Z` → `2026-05-01 12:34Z`: timestamps for tables. */
export function shortTime(iso: string | null | undefined): string | null {
  if (!iso) return null;
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)}Z`;
}

/** `key   value` lines for one record. */
export function printFields(fields: [string, unknown][], minWidth = 14): void {
  const width = Math.max(minWidth, ...fields.map(([k]) => k.length + 2));
  for (const [k, v] of fields)
    process.stdout.write(
      `${pc.dim(k.padEnd(width))}${v === null || v === undefined || v === '' ? '-' : String(v)}\n`,
    );
}

export const color = pc;
