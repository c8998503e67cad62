/** Current time as ISO-8601 UTC with milliseconds: the one time format stored by Rampart. */
export function isoNow(): string {
  return new Date().toISOString();
}

export { parseDuration } from '@rampart/shared/duration';
