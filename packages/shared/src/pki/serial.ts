import { PkiFormatError } from './errors.js';

/**
 * Certificate serials are written as lowercase hex without separators or leading zero octets
 * (`3a9f…`). Input is accepted the way openssl and browsers print it: any case, with or without
 * `:` or spaces, with or without `0x`.
 */
export function normalizeSerial(input: string): string {
  const hex = input.trim().replace(/^0x/i, '').replace(/[:\s]/g, '').toLowerCase();
  if (!/^[0-9a-f]+$/.test(hex) || hex.length > 42)
    throw new PkiFormatError(
      `"${input.slice(0, 60)}" is not a certificate serial; give it in hex as openssl prints it (e.g. 3A9F01…)`,
    );
  let h = hex.replace(/^0+/, '');
  if (h === '') h = '0';
  return h.length % 2 ? '0' + h : h;
}

/** Hex of a DER INTEGER's content octets (as stored in an X.509 serialNumber field), normalized. */
export function serialFromBytes(bytes: ArrayBuffer | Uint8Array): string {
  return normalizeSerial(
    Buffer.from(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes)).toString('hex') || '0',
  );
}

/** DER INTEGER content octets for a normalized serial (a leading 00 keeps it positive). */
export function serialToBytes(serial: string): Buffer {
  const b = Buffer.from(normalizeSerial(serial), 'hex');
  return b[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b;
}
