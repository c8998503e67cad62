import { SharedError } from '../errors/index.js';

/** A syntax error in a fleet query; `column` is 1-based (the query length + 1 for "end of query"). */
export class FleetQuerySyntaxError extends SharedError {
  readonly column: number | null;

  constructor(message: string, column: number | null = null) {
    super('QUERY_SYNTAX', message);
    this.name = 'FleetQuerySyntaxError';
    this.column = column;
  }
}

export type TokenKind = 'word' | 'string' | 'number' | 'punct' | 'end';

export interface Token {
  kind: TokenKind;
  /** Source text of the token (for strings: including the quotes). */
  text: string;
  /** Decoded value of a string or number token. */
  value?: string | number;
  /** 1-based column of the first character. */
  column: number;
}

const PUNCTUATION = ['<=', '>=', '!=', '=', '<', '>', '(', ')', ','] as const;
const WORD_START = /[A-Za-z_]/;
const WORD_PART = /[A-Za-z0-9_.-]/;
const DIGIT = /[0-9]/;
const NUMBER = /^-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?$/;
const SIMPLE_ESCAPES: Record<string, string> = {
  '"': '"',
  "'": "'",
  '\\': '\\',
  '/': '/',
  n: '\n',
  t: '\t',
  r: '\r',
  b: '\b',
  f: '\f',
};

/** Split a query into tokens; the last token is always `end`. */
export function tokenize(text: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i]!;
    if (/\s/.test(c)) {
      i++;
      continue;
    }
    const column = i + 1;
    if (c === '"' || c === "'") {
      const end = readString(text, i);
      tokens.push({ kind: 'string', text: text.slice(i, end.next), value: end.value, column });
      i = end.next;
      continue;
    }
    if (DIGIT.test(c) || (c === '-' && DIGIT.test(text[i + 1] ?? ''))) {
      let j = i + 1;
      while (j < text.length && /[A-Za-z0-9_.+-]/.test(text[j]!)) {
        // A sign belongs to the number only right after an exponent marker.
        if ((text[j] === '+' || text[j] === '-') && !/[eE]/.test(text[j - 1]!)) break;
        j++;
      }
      const raw = text.slice(i, j);
      if (!NUMBER.test(raw))
        throw new FleetQuerySyntaxError(`invalid number "${raw}" at column ${column}`, column);
      const value = Number(raw);
      if (!Number.isFinite(value)) {
        throw new FleetQuerySyntaxError(`number "${raw}" at column ${column} is out of range`, column);
      }
      tokens.push({ kind: 'number', text: raw, value: value === 0 ? 0 : value, column });
      i = j;
      continue;
    }
    if (WORD_START.test(c)) {
      let j = i + 1;
      while (j < text.length && WORD_PART.test(text[j]!)) j++;
      tokens.push({ kind: 'word', text: text.slice(i, j), column });
      i = j;
      continue;
    }
    const punct = PUNCTUATION.find((p) => text.startsWith(p, i));
    if (punct) {
      tokens.push({ kind: 'punct', text: punct, column });
      i += punct.length;
      continue;
    }
    const char = String.fromCodePoint(text.codePointAt(i)!);
    throw new FleetQuerySyntaxError(`unexpected character ${describeChar(char)} at column ${column}`, column);
  }
  tokens.push({ kind: 'end', text: '', column: text.length + 1 });
  return tokens;
}

function readString(text: string, start: number): { value: string; next: number } {
  const quote = text[start]!;
  let value = '';
  let i = start + 1;
  while (i < text.length) {
    const c = text[i]!;
    if (c === quote) return { value, next: i + 1 };
    if (c !== '\\') {
      value += c;
      i++;
      continue;
    }
    const e = text[i + 1];
    if (e === undefined) break;
    if (e === 'u') {
      const hex = text.slice(i + 2, i + 6);
      if (!/^[0-9A-Fa-f]{4}$/.test(hex)) {
        throw new FleetQuerySyntaxError(
          `invalid escape "\\u" at column ${i + 1} (expected 4 hex digits after \\u)`,
          i + 1,
        );
      }
      value += String.fromCharCode(parseInt(hex, 16));
      i += 6;
      continue;
    }
    const simple = SIMPLE_ESCAPES[e];
    if (simple === undefined) {
      throw new FleetQuerySyntaxError(
        `invalid escape "\\${e}" at column ${i + 1} (use \\", \\', \\\\, \\n, \\t, \\r, \\b, \\f, \\/ or \\uXXXX)`,
        i + 1,
      );
    }
    value += simple;
    i += 2;
  }
  throw new FleetQuerySyntaxError(`unterminated string starting at column ${start + 1}`, start + 1);
}

function describeChar(c: string): string {
  const code = c.codePointAt(0)!;
  return code < 0x20 || code === 0x7f
    ? `U+${code.toString(16).toUpperCase().padStart(4, '0')}`
    : JSON.stringify(c);
}
