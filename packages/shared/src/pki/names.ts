import { AttributeTypeAndValue, AttributeValue, Name, RelativeDistinguishedName } from '@peculiar/asn1-x509';
import { OID } from './oids.js';

const SHORT: Record<string, string> = {
  [OID.commonName]: 'CN',
  [OID.organizationName]: 'O',
  '2.5.4.11': 'OU',
  '2.5.4.6': 'C',
  '2.5.4.7': 'L',
  '2.5.4.8': 'ST',
  '2.5.4.5': 'serialNumber',
};

/** A distinguished name as `CN=…, O=…` (RFC 4514 order reversed to the usual display order). */
export function nameToString(name: Name): string {
  return name
    .map((rdn) => rdn.map((a) => `${SHORT[a.type] ?? a.type}=${a.value.toString()}`).join('+'))
    .join(', ');
}

/** The first common name of a distinguished name, or null. */
export function commonNameOf(name: Name): string | null {
  for (const rdn of name) for (const a of rdn) if (a.type === OID.commonName) return a.value.toString();
  return null;
}

/** A name of UTF8String attributes, e.g. `[['O','Acme'],['CN','DW100-0001']]`. */
export function buildName(parts: ReadonlyArray<readonly [keyof typeof BUILD_OIDS, string]>): Name {
  return new Name(
    parts.map(
      ([k, v]) =>
        new RelativeDistinguishedName([
          new AttributeTypeAndValue({
            type: BUILD_OIDS[k],
            // C and serialNumber are PrintableStrings by definition (serialNumber falls back to UTF8String
            // for characters PrintableString lacks); the others are UTF8String as RFC 5280 recommends.
            value: new AttributeValue(
              k === 'C' || (k === 'serialNumber' && /^[A-Za-z0-9 '()+,\-./:=?]*$/.test(v))
                ? { printableString: v }
                : { utf8String: v },
            ),
          }),
        ]),
    ),
  );
}

const BUILD_OIDS = {
  CN: OID.commonName,
  O: OID.organizationName,
  OU: '2.5.4.11',
  C: '2.5.4.6',
  serialNumber: '2.5.4.5',
} as const;
