import { createHash, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { canonicalize } from '@tufjs/canonical-json';
import { Type, type Static } from '@sinclair/typebox';

/** A public key as TUF root and delegations list it. */
export interface TufKey {
  keytype: 'ecdsa' | 'ed25519';
  scheme: 'ecdsa-sha2-nistp256' | 'ed25519';
  keyval: { public: string };
}

export const TOP_LEVEL_ROLES = ['root', 'targets', 'snapshot', 'timestamp'] as const;
export type TopLevelRole = (typeof TOP_LEVEL_ROLES)[number];

/** Names of delegated targets roles: lower case, safe in a URL and a file name, not a top-level name. */
export const DELEGATED_ROLE = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export function isTopLevelRole(name: string): name is TopLevelRole {
  return (TOP_LEVEL_ROLES as readonly string[]).includes(name);
}

/** Why a key cannot sign TUF metadata here, or null: ECDSA P-256 and Ed25519 are what TUF clients verify. */
export function unsupportedKeyProblem(key: KeyObject): string | null {
  if (key.asymmetricKeyType === 'ed25519') return null;
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return null;
  const what =
    key.asymmetricKeyType === 'ec'
      ? `an EC key on ${key.asymmetricKeyDetails?.namedCurve ?? 'an unknown curve'}`
      : `a ${key.asymmetricKeyType ?? 'unknown'} key`;
  return `${what}; release keys must be ECDSA P-256 or Ed25519`;
}

/** The TUF form of a public (or private) key: PEM SubjectPublicKeyInfo in `keyval.public`. */
export function tufKeyOf(key: KeyObject): TufKey {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  const problem = unsupportedKeyProblem(pub);
  if (problem) throw new TypeError(problem);
  const pem = pub.export({ type: 'spki', format: 'pem' }) as string;
  return pub.asymmetricKeyType === 'ed25519'
    ? { keytype: 'ed25519', scheme: 'ed25519', keyval: { public: pem } }
    : { keytype: 'ecdsa', scheme: 'ecdsa-sha2-nistp256', keyval: { public: pem } };
}

/** TUF key id: SHA-256 (hex) of the canonical JSON of the key. */
export function tufKeyId(key: TufKey): string {
  return createHash('sha256').update(canonicalize(key)).digest('hex');
}

/** The bytes a TUF signature covers: the canonical JSON of the document's `signed` member. */
export function signedBytes(signed: unknown): Buffer {
  return Buffer.from(canonicalize(signed));
}

/** SHA-256 (hex) of what is signed: names the exact document a detached signature is for. */
export function signedDigest(signed: unknown): string {
  return createHash('sha256').update(signedBytes(signed)).digest('hex');
}

export const DETACHED_SIGNATURE_FORMAT = 'rampart-tuf-signature/1';

/**
 * A signature made away from the server (`rampart release sign`) over one metadata document,
 * handed back to the server, which adds it to the document once it has checked it.
 */
export const DetachedSignature = Type.Object(
  {
    format: Type.Literal(DETACHED_SIGNATURE_FORMAT),
    role: Type.String({ minLength: 1, maxLength: 64 }),
    version: Type.Integer({ minimum: 1 }),
    signedDigest: Type.String({
      pattern: '^[0-9a-f]{64}$',
      description: 'SHA-256 of the canonical JSON of the signed document.',
    }),
    keyid: Type.String({ pattern: '^[0-9a-f]{64}$' }),
    sig: Type.String({ pattern: '^[0-9a-f]{2,1024}$', description: 'The signature, hex.' }),
  },
  { additionalProperties: false },
);
export type DetachedSignature = Static<typeof DetachedSignature>;

interface SignableDocument {
  signed: { _type?: unknown; version?: unknown } & Record<string, unknown>;
}

function hashFor(key: KeyObject): string | null {
  return key.asymmetricKeyType === 'ed25519' ? null : 'sha256';
}

/**
 * Sign a TUF metadata document with a private key the way TUF clients verify it, as a detached
 * signature. `role` names the role the document is (for delegated targets, the delegated name).
 */
export function signDetached(doc: SignableDocument, role: string, privateKey: KeyObject): DetachedSignature {
  const tuf = tufKeyOf(privateKey);
  const bytes = signedBytes(doc.signed);
  const sig = sign(hashFor(privateKey), bytes, privateKey).toString('hex');
  const version = doc.signed.version;
  if (typeof version !== 'number') throw new TypeError('the document has no signed.version');
  return {
    format: DETACHED_SIGNATURE_FORMAT,
    role,
    version,
    signedDigest: signedDigest(doc.signed),
    keyid: tufKeyId(tuf),
    sig,
  };
}

/** Whether `sig` (hex) over the canonical form of `signed` verifies with the TUF key. */
export function verifyTufSignature(signed: unknown, key: TufKey, sig: string): boolean {
  try {
    const pub = createPublicKey(key.keyval.public);
    return verify(hashFor(pub), signedBytes(signed), pub, Buffer.from(sig, 'hex'));
  } catch {
    return false;
  }
}
