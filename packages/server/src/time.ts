/** Current time as ISO-8601 UTC with milliseconds: the one time format stored by Rampart. */
export function isoNow(): string {
  return new Date().toISOString();
}

/** Parse durations such as `30d`, `12h`, `15m`, `90s`, `2w` into milliseconds. */
export function parseDuration(text: string): number | null {
  const m = /^(\d+)\s*(s|m|h|d|w)$/.exec(text.trim());
  if (!m) return null;
  const unit = { s: 1e3, m: 60e3, h: 3600e3, d: 86400e3, w: 7 * 86400e3 }[
    m[2] as 's' | 'm' | 'h' | 'd' | 'w'
  ];
  return Number(m[1]) * unit;
}
