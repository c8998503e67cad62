import { PkiFormatError } from './errors.js';

/** RFC 5280 CRLReason codes (certificateHold and removeFromCRL are not used: Rampart does not suspend certificates). */
export const REVOCATION_REASONS = {
  unspecified: 0,
  keyCompromise: 1,
  cACompromise: 2,
  affiliationChanged: 3,
  superseded: 4,
  cessationOfOperation: 5,
  privilegeWithdrawn: 9,
} as const;
export type RevocationReason = keyof typeof REVOCATION_REASONS;
export const REVOCATION_REASON_NAMES = Object.keys(REVOCATION_REASONS) as RevocationReason[];

/** Accepts the RFC name in any case and with `-`/`_` separators: `key-compromise`, `keyCompromise`, `KEY_COMPROMISE`. */
export function parseRevocationReason(input: string): RevocationReason {
  const flat = input.replace(/[-_\s]/g, '').toLowerCase();
  const found = REVOCATION_REASON_NAMES.find((n) => n.toLowerCase() === flat);
  if (!found)
    throw new PkiFormatError(
      `unknown revocation reason "${input}"; use one of ${REVOCATION_REASON_NAMES.join(', ')}`,
    );
  return found;
}
