const UNITS = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3, w: 7 * 86400e3 } as const;

/** Parse durations such as `30d`, `12h`, `15m`, `90s`, `2w` into milliseconds; null if it is not one. */
export function parseDuration(text: string): number | null {
  const m = /^(\d+)\s*(s|m|h|d|w)$/.exec(text.trim());
  if (!m) return null;
  return Number(m[1]) * UNITS[m[2] as keyof typeof UNITS];
}
