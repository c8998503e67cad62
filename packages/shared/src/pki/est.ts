import * as asn1js from 'asn1js';
import { PkiFormatError } from './errors.js';

/** EST (RFC 7030, with the RFC 8951 clarifications) paths and media types. */
export const EST_PATH = '/.well-known/est';
export const EST_MEDIA = {
  pkcs10: 'application/pkcs10',
  pkcs7: 'application/pkcs7-mime',
  certsOnly: 'application/pkcs7-mime; smime-type=certs-only',
  csrattrs: 'application/csrattrs',
} as const;

/**
 * Decode an EST body: base64 with any line breaks (RFC 8951 §3.2). A PEM armour around it is
 * tolerated, because some clients send one. Anything else is refused with what was wrong.
 */
export function decodeBase64Body(body: string | Buffer, what: string): Buffer {
  let text = (typeof body === 'string' ? body : body.toString('latin1')).trim();
  const armour = /^-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----$/.exec(text);
  if (armour) text = armour[2]!;
  const compact = text.replace(/[\r\n\t ]/g, '');
  if (compact === '') throw new PkiFormatError(`the ${what} body is empty; send it base64-encoded`);
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(compact) || compact.length % 4 !== 0)
    throw new PkiFormatError(
      `the ${what} body is not base64 (EST bodies are base64-encoded DER, RFC 8951); ` +
        `found ${describeNonBase64(compact)}`,
    );
  const decoded = Buffer.from(compact, 'base64');
  // Canonical only (RFC 4648 §3.5): the unused bits before padding must be zero, so one DER value
  // has exactly one accepted encoding.
  if (decoded.toString('base64') !== compact)
    throw new PkiFormatError(
      `the ${what} body is not canonical base64: the bits before the "=" padding must be zero`,
    );
  return decoded;
}

function describeNonBase64(s: string): string {
  const bad = /[^A-Za-z0-9+/=]/.exec(s);
  if (bad) return `character ${JSON.stringify(bad[0])} at offset ${bad.index}`;
  return `a length of ${s.length} characters, not a multiple of 4`;
}

/** Base64 with 64-character lines, as EST responses are sent. */
export function encodeBase64Body(der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  return lines.join('\r\n') + '\r\n';
}

/** PEM armour around DER. */
export function toPem(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der).toString('base64');
  const lines: string[] = [];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** Every PEM block with the given label, as DER. */
export function fromPem(text: string, label: string): Buffer[] {
  const re = new RegExp(`-----BEGIN ${label}-----([\\s\\S]*?)-----END ${label}-----`, 'g');
  return [...text.matchAll(re)].map((m) => Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64'));
}

/** CsrAttrs (RFC 7030 §4.5.2) listing OIDs only: the key types and signature algorithm the server wants. */
export function encodeCsrAttrs(oids: readonly string[]): Buffer {
  return Buffer.from(
    new asn1js.Sequence({ value: oids.map((o) => new asn1js.ObjectIdentifier({ value: o })) }).toBER(),
  );
}

/** The OIDs of a CsrAttrs body (attributes with values are listed by their type). */
export function decodeCsrAttrs(der: Uint8Array): string[] {
  const parsed = asn1js.fromBER(new Uint8Array(der));
  if (parsed.offset === -1 || !(parsed.result instanceof asn1js.Sequence))
    throw new PkiFormatError('not a CsrAttrs sequence');
  return parsed.result.valueBlock.value.map((v) => {
    if (v instanceof asn1js.ObjectIdentifier) return v.valueBlock.toString();
    if (v instanceof asn1js.Sequence && v.valueBlock.value[0] instanceof asn1js.ObjectIdentifier)
      return v.valueBlock.value[0].valueBlock.toString();
    throw new PkiFormatError('unexpected element in CsrAttrs');
  });
}
