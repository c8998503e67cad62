import { describe, expect, it } from 'vitest';
import { GENESIS_HASH, type AuditEntry } from './entry.js';
import { formatSyslog, octetCountingFrame } from './syslog.js';

const entry: AuditEntry = {
  seq: 42,
  time: '2026-03-04T05:06:07.890Z',
  actor: 'token:abcdefghijkl',
  action: 'token.create',
  target: 'token:mnopqrstuvwx',
  outcome: 'success',
  details: { name: 'ci "nightly" ]\\', role: 'viewer', note: 'grüße' },
  prevHash: GENESIS_HASH,
  hash: 'ab'.repeat(32),
};

interface Syslog {
  pri: number;
  version: number;
  timestamp: string;
  hostname: string;
  appName: string;
  procId: string;
  msgId: string;
  sd: Record<string, Record<string, string>>;
  msg: string | null;
}

/** A strict reader of RFC 5424 messages (section 6 ABNF), enough to check what Rampart writes. */
function parseRfc5424(line: string): Syslog {
  const head =
    /^<(\d{1,3})>([1-9]\d{0,2}) (-|\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})) ([\x21-\x7e]{1,255}) ([\x21-\x7e]{1,48}) ([\x21-\x7e]{1,128}) ([\x21-\x7e]{1,32}) /.exec(
      line,
    );
  if (!head) throw new Error(`not an RFC 5424 header: ${line.slice(0, 120)}`);
  const pri = Number(head[1]);
  if (pri > 191) throw new Error(`PRI ${pri} out of range`);
  let i = head[0].length;
  const sd: Syslog['sd'] = {};
  if (line[i] === '-') i++;
  else {
    while (line[i] === '[') {
      i++;
      const id = /^[^= \]"]{1,32}/.exec(line.slice(i))?.[0];
      if (!id) throw new Error(`bad SD-ID at ${i}`);
      i += id.length;
      const params: Record<string, string> = {};
      while (line[i] === ' ') {
        i++;
        const name = /^([^= \]"]{1,32})="/.exec(line.slice(i));
        if (!name) throw new Error(`bad SD-PARAM at ${i}`);
        i += name[0].length;
        let value = '';
        for (;;) {
          const c = line[i++];
          if (c === undefined) throw new Error('unterminated PARAM-VALUE');
          if (c === '\\' && ['"', '\\', ']'].includes(line[i] ?? '')) value += line[i++];
          else if (c === '"') break;
          else if (c === ']') throw new Error('unescaped ] in PARAM-VALUE');
          else value += c;
        }
        params[name[1]!] = value;
      }
      if (line[i++] !== ']') throw new Error(`SD-ELEMENT not closed at ${i}`);
      sd[id] = params;
    }
  }
  let msg: string | null = null;
  if (i < line.length) {
    if (line[i] !== ' ') throw new Error(`expected SP before MSG at ${i}`);
    msg = line.slice(i + 1);
  }
  return {
    pri,
    version: Number(head[2]),
    timestamp: head[3]!,
    hostname: head[4]!,
    appName: head[5]!,
    procId: head[6]!,
    msgId: head[7]!,
    sd,
    msg,
  };
}

describe('formatSyslog (RFC 5424)', () => {
  it('writes header, structured data with the chain fields, and the entry as JSON', () => {
    const line = formatSyslog(entry, { hostname: 'rampart-1.example.net' });
    const m = parseRfc5424(line);
    expect(m).toMatchObject({
      pri: 13 * 8 + 6,
      version: 1,
      timestamp: entry.time,
      hostname: 'rampart-1.example.net',
      appName: 'rampart',
      procId: '-',
      msgId: 'token.create',
    });
    expect(m.sd).toEqual({
      'rampart@32473': {
        seq: '42',
        actor: entry.actor,
        action: entry.action,
        target: entry.target,
        outcome: 'success',
        hash: entry.hash,
      },
    });
    expect(JSON.parse(m.msg!)).toEqual(entry);
  });

  it('takes the severity from the outcome, under facility 13 (log audit)', () => {
    const pri = (outcome: AuditEntry['outcome']) =>
      parseRfc5424(formatSyslog({ ...entry, outcome }, { hostname: 'h' })).pri;
    expect(pri('success')).toBe(110); // informational
    expect(pri('failure')).toBe(109); // notice
    expect(pri('denied')).toBe(108); // warning
  });

  it('escapes ", \\ and ] in structured data values', () => {
    const tricky = { ...entry, actor: 'anonymous "x"', target: 'a]b\\c' };
    const line = formatSyslog(tricky, { hostname: 'h' });
    expect(line).toContain('actor="anonymous \\"x\\""');
    expect(line).toContain('target="a\\]b\\\\c"');
    expect(parseRfc5424(line).sd['rampart@32473']).toMatchObject({
      actor: 'anonymous "x"',
      target: 'a]b\\c',
    });
  });

  it('keeps header fields printable ASCII within their lengths, NILVALUE when empty', () => {
    const line = formatSyslog(
      { ...entry, action: `device.${'x'.repeat(60)}` },
      { hostname: 'my host', appName: '', procId: '1234' },
    );
    const m = parseRfc5424(line);
    expect(m.hostname).toBe('my_host');
    expect(m.appName).toBe('-');
    expect(m.procId).toBe('1234');
    expect(m.msgId).toHaveLength(32);
    expect(line).not.toContain('\n');
  });
});

describe('octetCountingFrame (RFC 6587)', () => {
  it('prefixes the length in octets, not characters', () => {
    const frame = octetCountingFrame('grüße');
    expect(frame.toString('utf8')).toBe('7 grüße');
    expect(frame.length).toBe(9);
  });
});
