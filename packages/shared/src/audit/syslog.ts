import type { AuditEntry } from './entry.js';

/**
 * RFC 5424 rendering of audit entries for a SIEM. Facility 13 ("log audit"); severity follows the
 * outcome. Structured data carries the chain fields under the SD-ID `rampart@32473` (32473 is the
 * example enterprise number of RFC 5612, used until Rampart has its own); the message is the entry as JSON.
 */
export const SYSLOG_FACILITY_LOG_AUDIT = 13;
const SEVERITY = { success: 6, failure: 5, denied: 4 } as const;

export interface SyslogOptions {
  hostname: string;
  appName?: string;
  procId?: string;
}

function sdValue(v: string): string {
  return v.replace(/[\\"\]]/g, (c) => `\\${c}`);
}

/** Printable US-ASCII without spaces, cut to `max` characters; `-` when empty (the NILVALUE). */
function header(v: string, max: number): string {
  const clean = v.replace(/[^\x21-\x7e]/g, '_').slice(0, max);
  return clean === '' ? '-' : clean;
}

export function formatSyslog(entry: AuditEntry, options: SyslogOptions): string {
  const pri = SYSLOG_FACILITY_LOG_AUDIT * 8 + SEVERITY[entry.outcome];
  const sd =
    `[rampart@32473 seq="${entry.seq}" actor="${sdValue(entry.actor)}" action="${sdValue(entry.action)}"` +
    ` target="${sdValue(entry.target)}" outcome="${entry.outcome}" hash="${entry.hash}"]`;
  return [
    `<${pri}>1`,
    entry.time,
    header(options.hostname, 255),
    header(options.appName ?? 'rampart', 48),
    header(options.procId ?? '-', 128),
    header(entry.action, 32),
    sd,
    JSON.stringify(entry),
  ].join(' ');
}

/** RFC 6587 octet-counting frame for stream transports (TCP, TLS). */
export function octetCountingFrame(message: string): Buffer {
  const body = Buffer.from(message, 'utf8');
  return Buffer.concat([Buffer.from(`${body.length} `, 'ascii'), body]);
}
