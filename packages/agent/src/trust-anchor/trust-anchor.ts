import type { KeyObject } from 'node:crypto';

/**
 * Where the device's identity key lives. The key is created inside the anchor and never leaves it;
 * the agent only asks for signatures. Implementations: a software key file, a TPM 2.0 (through
 * tpm2-tools), and a PKCS#11 token (a secure element, a smart card, an HSM).
 */
export interface TrustAnchor {
  readonly kind: 'software' | 'tpm' | 'pkcs11';
  /** Shown wherever the device's identity is reported, so that a weaker anchor is never mistaken for hardware. */
  readonly strength: 'hardware' | 'software (weaker: the key is a file on the device)';
  /** Create the identity key if there is none yet; return its public half. */
  ensureKey(): Promise<KeyObject>;
  publicKey(): Promise<KeyObject | null>;
  /**
   * ECDSA P-256 / SHA-256 signature, DER-encoded. The one signing path: certificate requests are
   * signed through it, whatever the anchor.
   */
  sign(data: Uint8Array): Promise<Buffer>;
  /**
   * The private key for Node's TLS stack, for mutual TLS (gateway, EST re-enrollment), when the
   * anchor lets the key be used in-process: the software anchor returns its key. Hardware anchors
   * return null: their key cannot leave the chip, and mutual TLS goes through the OpenSSL tunnel
   * (`tls/openssl-tunnel.ts`), which signs the handshake in the TPM or the token.
   */
  tlsKey(): Promise<KeyObject | null>;
  /**
   * Open a JWE (RFC 7516 compact serialization, `ECDH-ES+A256KW` / `A256GCM`) encrypted to the
   * device key, returning its plaintext: how the content key of an encrypted release reaches the
   * device. The software anchor opens it with its key file; the TPM (TPM2_ECDH_ZGen) and PKCS#11
   * (CKM_ECDH1_DERIVE) anchors do the ECDH in the hardware and the rest in `jwe-ecdh.ts`, and refuse
   * an identity key created before they could (without the decrypt attribute / CKA_DERIVE).
   * Optional: without it the agent refuses encrypted releases.
   */
  unwrapKey?(jwe: string): Promise<Uint8Array>;
  /**
   * Let go of what the anchor holds open (a PKCS#11 session and login), when it has anything; called
   * when the agent is done with the anchor. The anchor opens it again if it is used afterwards.
   */
  close?(): Promise<void>;
}
