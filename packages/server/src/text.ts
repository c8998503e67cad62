// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f]/g;

/**
 * Client-supplied text (a claimed device id, a CSR's CN) as it may appear in messages, logs and
 * audit entries: control characters escaped as `\uXXXX`, never raw (PostgreSQL text cannot hold
 * NUL, and a newline must not forge a line).
 */
export function printable(text: string): string {
  return text.replace(CONTROL_CHARACTERS, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** A listener address a client can connect to: wildcards become loopback, IPv6 in brackets. */
export function connectableHost(host: string): string {
  if (host === '0.0.0.0') return '127.0.0.1';
  if (host === '::') return '[::1]';
  return host.includes(':') ? `[${host}]` : host;
}
