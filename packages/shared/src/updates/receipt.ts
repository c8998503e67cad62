import type { KeyObject } from 'node:crypto';
import { Type, type Static } from '@sinclair/typebox';
import { signatureProblem, type Signed } from '../provisioning/signed.js';
import { StringEnum, errorPath, describeError, validatorFor } from '../schema/index.js';
import { ARTIFACT_KINDS } from './target.js';

/**
 * The install receipt: what a device says about an update once it has decided its fate — the new
 * slot booted and passed its self-test and was committed, or it was rolled back (and why). The device
 * signs it with its identity key, inside its trust anchor, over the canonical JSON of the document
 * (the same scheme as batch manifests and provisioning transcripts: `signDocument`), so the platform
 * can count a device as updated only on its own word, and anyone can check a receipt later with
 * nothing but the device's public key.
 */
export const RECEIPT_TYPE = 'rampart-update-receipt';

export const RECEIPT_OUTCOMES = ['committed', 'rolled-back'] as const;
export type ReceiptOutcome = (typeof RECEIPT_OUTCOMES)[number];

/** Why an update was rolled back. */
export const ROLLBACK_REASONS = [
  /** The configured self-test exited non-zero, or did not finish in its time limit. */
  'self-test-failed',
  /** The pending slot was started more times than allowed without being committed. */
  'crash-loop',
  /** The pending slot was not committed before its deadline. */
  'timeout',
  /** The bootloader booted the other slot (it gave up on the pending one itself). */
  'bootloader',
  /** An operator asked for it (`rampart-agent update rollback`). */
  'operator',
] as const;
export type RollbackReason = (typeof ROLLBACK_REASONS)[number];

const Hex64 = Type.String({ pattern: '^[0-9a-f]{64}$' });
const Slot = StringEnum(['a', 'b'] as const);
const Time = Type.String({ format: 'date-time' });

const ReceiptRelease = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 255 }),
    version: Type.String({ minLength: 1, maxLength: 128 }),
    kind: StringEnum(ARTIFACT_KINDS),
    releaseCounter: Type.Integer({ minimum: 0 }),
    sha256: Hex64,
    length: Type.Integer({ minimum: 0 }),
  },
  { additionalProperties: false },
);

export const UpdateReceiptSchema = Type.Object(
  {
    type: Type.Literal(RECEIPT_TYPE),
    version: Type.Literal(1),
    /** Unique per receipt (random), so that a receipt cannot be counted twice. */
    id: Type.String({ pattern: '^[0-9a-f]{32}$' }),
    deviceId: Type.String({ minLength: 1, maxLength: 255 }),
    outcome: StringEnum(RECEIPT_OUTCOMES),
    /** Set when the outcome is `rolled-back`. */
    reason: Type.Optional(StringEnum(ROLLBACK_REASONS)),
    /** What happened, for people: the self-test's exit, the number of starts. */
    detail: Type.String({ maxLength: 2000 }),
    /** The release the update tried to install. */
    release: ReceiptRelease,
    /** The slot the release was installed into. */
    slot: Slot,
    /** The slot that runs after this outcome (the new one when committed, the old one when rolled back). */
    runningSlot: Slot,
    /** The version running after this outcome (null when the old slot held nothing known). */
    runningVersion: Type.Union([Type.String(), Type.Null()]),
    /** Starts of the pending slot before the outcome. */
    bootAttempts: Type.Integer({ minimum: 0 }),
    /** The anti-rollback counter for this kind after the outcome, as held in `counterStore`. */
    counter: Type.String({ pattern: '^[0-9]+$' }),
    /** Where the anti-rollback counter lives: a TPM NV counter, or a file (weaker). */
    counterStore: StringEnum(['tpm', 'file'] as const),
    at: Time,
  },
  { additionalProperties: false },
);

export type UpdateReceipt = Static<typeof UpdateReceiptSchema>;
export type SignedUpdateReceipt = Signed<UpdateReceipt>;

const SignedReceiptSchema = Type.Object(
  {
    ...UpdateReceiptSchema.properties,
    signature: Type.Object(
      {
        algorithm: Type.Literal('ecdsa-p256-sha256'),
        keyId: Hex64,
        value: Type.String({ minLength: 1 }),
      },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);

/** What is wrong with the shape of a receipt, or null (the signature is not checked here). */
export function receiptShapeProblem(document: unknown): string | null {
  const validate = validatorFor(SignedReceiptSchema);
  if (validate(document)) {
    const r = document as SignedUpdateReceipt;
    if (r.outcome === 'rolled-back' && r.reason === undefined) return 'a rolled-back receipt has no reason';
    if (r.outcome === 'committed' && r.reason !== undefined)
      return 'a committed receipt has a rollback reason';
    if (r.outcome === 'committed' && r.runningSlot !== r.slot)
      return 'a committed receipt runs another slot than the one installed';
    return null;
  }
  const first = validate.errors?.[0];
  if (!first) return 'the receipt is not valid';
  const path = errorPath(first);
  return `${path ? `${path} ` : ''}${describeError(first)}`;
}

/**
 * Why `document` is not a valid receipt signed by `publicKey` (the device's identity key, as in its
 * certificate), or null when it is. Shape first, then the signature over the canonical JSON.
 * `spkiDer`: see `signatureProblem`.
 */
export function receiptProblem(
  document: unknown,
  publicKey: KeyObject | string,
  spkiDer?: Uint8Array,
): string | null {
  const shape = receiptShapeProblem(document);
  if (shape) return `not an update receipt: ${shape}`;
  return signatureProblem(document, publicKey, spkiDer);
}

/** The receipt, checked: throws a TypeError saying what is wrong unless it is valid and signed by `publicKey`. */
export function verifyReceipt(document: unknown, publicKey: KeyObject | string): SignedUpdateReceipt {
  const problem = receiptProblem(document, publicKey);
  if (problem) throw new TypeError(problem);
  return document as SignedUpdateReceipt;
}
